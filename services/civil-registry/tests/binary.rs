//! The binary as operators run it: its exit codes and the files its admin commands write.

#[test]
fn a_database_url_that_cannot_keep_the_register_exits_64_naming_the_key() {
    for url in ["sqlite::memory:", "mysql://127.0.0.1/register"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_civil-registry"))
            .arg("serve")
            .env("CIVIL_REGISTRY_DATABASE__URL", url)
            .env("CIVIL_REGISTRY_SERVER__LISTEN_ADDR", "127.0.0.1:0")
            .env("CIVIL_REGISTRY_SERVER__TLS__INSECURE_PLAINTEXT", "true")
            .output()
            .expect("civil-registry runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{url}: {stderr}");
        assert!(
            stderr.contains("invalid configuration: database.url:"),
            "{url}: {stderr}"
        );
    }
}

/// `config keys` is how an operator finds the key they misspelt, so a misspelt key must
/// not stop it (`serve` refuses the same configuration with 64).
#[test]
fn config_keys_lists_the_keys_even_when_the_configuration_is_invalid() {
    let run = |command: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_civil-registry"))
            .args(command)
            .env("CIVIL_REGISTRY_SERVER__LISTEN_ADRESS", "127.0.0.1:0")
            .output()
            .expect("civil-registry runs")
    };
    let keys = run(&["config", "keys"]);
    assert!(keys.status.success(), "{keys:?}");
    let listed = String::from_utf8_lossy(&keys.stdout);
    assert!(
        listed.lines().any(
            |line| line.starts_with("server.listen_addr\tCIVIL_REGISTRY_SERVER__LISTEN_ADDR\t")
        ),
        "{listed}"
    );
    let serve = run(&["serve"]);
    assert_eq!(serve.status.code(), Some(64), "{serve:?}");
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("LISTEN_ADRESS"),
        "{serve:?}"
    );
}

/// `civil-registry` run with its database at `url`: whether it succeeded, and its stderr.
fn civil_registry(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_civil-registry"))
        .args(args)
        .env("CIVIL_REGISTRY_DATABASE__URL", url)
        .output()
        .expect("civil-registry runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_import_of_officials_that_fails_loses_no_token_and_keeps_the_earlier_file() {
    use std::os::unix::fs::PermissionsExt as _;
    // Arrange: a register with one unit, and a tokens file from an earlier import that
    // anyone could read.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/civil.db?mode=rwc", dir.path().display());
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let units = file(
        "units.csv",
        "code,name,level,province_code,parent_code,active\nMOJ,Bo Tu phap,ministry,001,,true\n",
    );
    let unknown_unit = file(
        "bad.csv",
        "official_id,unit_code,role\nsup_1,MOJ,supervisor\nreg_1,C404,registrar\n",
    );
    let good = file(
        "good.csv",
        "official_id,unit_code,role\nsup_1,MOJ,supervisor\n",
    );
    let tokens = file("tokens.csv", "from the earlier import\n");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(civil_registry(&url, &["migrate"]).0);
    assert!(civil_registry(&url, &["admin", "units", "import", &units]).0);

    // Act
    let failed = civil_registry(
        &url,
        &[
            "admin",
            "officials",
            "import",
            &unknown_unit,
            "--tokens-out",
            &tokens,
        ],
    );
    let kept = std::fs::read_to_string(&tokens).expect("tokens file");
    let imported = civil_registry(
        &url,
        &[
            "admin",
            "officials",
            "import",
            &good,
            "--tokens-out",
            &tokens,
        ],
    );

    // Assert
    assert!(!failed.0, "an unknown unit fails the import: {}", failed.1);
    assert_eq!(kept, "from the earlier import\n");
    assert!(imported.0, "{}", imported.1);
    let written = std::fs::read_to_string(&tokens).expect("tokens file");
    assert!(written.contains("sup_1,MOJ,supervisor,"), "{written}");
    let mode = std::fs::metadata(&tokens)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "tokens readable by the owner only");
    assert!(!dir.path().join("tokens.csv.pending").exists());
}

#[tokio::test]
async fn audit_verify_reads_the_register_and_never_migrates_it() {
    use sqlx::Connection as _;
    // Arrange: a database with no schema at all (say, a restored copy pointed at wrongly).
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/civil.db?mode=rwc", dir.path().display());

    // Act
    let (verified, stderr) = civil_registry(&url, &["audit", "verify"]);

    // Assert: it fails on the missing audit log instead of creating one to verify.
    assert!(!verified, "{stderr}");
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let objects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(objects, 0, "audit verify created a schema");
}
