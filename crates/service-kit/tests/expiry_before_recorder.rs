//! A certificate loaded before the metrics recorder is installed (the telemetry exporter's
//! client identity is) still has its expiry exported. A binary of its own: this test needs
//! the process-global recorder not to exist yet when the certificate is loaded.

mod common;

use common::{certificate_not_after, sample};
use service_kit::pki::TempCa;

#[test]
fn a_certificate_loaded_before_the_recorder_is_exported_once_it_is_installed() {
    // Arrange
    let ca = TempCa::new("early").expect("ca");
    let client_cert = ca.client_cert("telemetry").expect("client cert");
    service_kit::tls::TlsConnector::from_files(
        ca.ca_file(),
        Some((&client_cert.cert_file, &client_cert.key_file)),
        None,
    )
    .expect("client connector");

    // Act
    let body = service_kit::metrics::handle().expect("recorder").render();

    // Assert
    assert_eq!(
        sample(
            &body,
            service_kit::tls::TLS_CERTIFICATE_EXPIRY,
            &[("file", &client_cert.cert_file.display().to_string())],
        ),
        Some(certificate_not_after(&client_cert.cert_file)),
        "{body}"
    );
}
