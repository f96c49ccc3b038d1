//! Protocol buffers of fedchain, generated from `proto/fedchain/v1/*.proto` at build time.
//!
//! This crate owns the `.proto` files and nothing else: no logic, no conversions. Conversions to
//! domain types live with the domain types' users (the coordinator and the worker), so this crate
//! depends on nothing of fedchain. The gRPC services are added by the end-to-end issue; today it
//! holds the shared identifiers and descriptors.
#![deny(missing_docs)]

/// Version 1 of the fedchain protocol (`package fedchain.v1`).
pub mod v1 {
    #![allow(missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/fedchain.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::v1::{dataset_schema, DatasetSchema, Digest};
    use prost::Message;

    #[test]
    fn messages_roundtrip_through_wire_bytes() {
        let schema = DatasetSchema {
            features: vec!["age".into(), "bmi".into()],
            target: "progression".into(),
            task: Some(dataset_schema::Task::Regression(
                dataset_schema::Regression {},
            )),
        };
        let bytes = schema.encode_to_vec();
        assert_eq!(DatasetSchema::decode(bytes.as_slice()).unwrap(), schema);
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let d = Digest {
            sha256: vec![7; 32],
        };
        let bytes = d.encode_to_vec();
        assert!(Digest::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
