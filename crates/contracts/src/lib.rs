//! Rust bindings of the two public contracts under `proto/`, generated at build
//! time. No hand-written logic lives here: the services share only these types.

/// `google.type` messages used by the contracts (dates).
pub mod google {
    /// `google.type.Date`.
    pub mod r#type {
        tonic::include_proto!("google.r#type");
    }
    /// `google.rpc.Status`, carried per item in batch responses.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Ministry of Public Security: the population registry.
pub mod mps {
    /// Population registry contract.
    pub mod population {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("mps.population.v1");
        }
    }
}

/// Ministry of Justice: the civil-status register.
pub mod moj {
    /// Civil-status contract.
    pub mod civilstatus {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("moj.civilstatus.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of every contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
