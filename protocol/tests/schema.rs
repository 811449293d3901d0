//! The committed JSON Schemas under protocol/schema/ must equal the ones generated from the
//! types. `REELFORGE_BLESS=1 cargo test -p reelforge-protocol --test schema` rewrites them.

use std::path::PathBuf;

#[test]
fn committed_schema_is_fresh() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
    let bless = std::env::var_os("REELFORGE_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, generated) in protocol::schema::all() {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        // Compared as JSON values, not text: another crate in the workspace may turn on
        // serde_json's `preserve_order`, which changes the key order schemars writes.
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        if parse(&committed).is_none() || parse(&committed) != parse(&generated) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale schema files {stale:?}: run `REELFORGE_BLESS=1 cargo test -p reelforge-protocol --test schema` and commit protocol/schema/"
    );
}

#[test]
fn examples_validate_against_types() {
    // The examples quoted in the README parse and validate.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in ["edit.json", "create.json"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let job = protocol::Job::from_json(&bytes, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Canonical form round-trips.
        let again = protocol::Job::from_json(&job.to_json(), &Default::default()).unwrap();
        assert_eq!(job, again);
    }
}
