//! The JSON Schema of the wire format, generated from the types. The committed copies live in
//! `protocol/schema/`; a test fails when they are stale (`REELFORGE_BLESS=1 cargo test -p
//! reelforge-protocol` rewrites them).

use schemars::{JsonSchema, schema_for};

use crate::{Control, Event, Heartbeat, Job, JobResult, Task};

/// Every document type, as (file name, pretty JSON Schema).
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("job.schema.json", render::<Job>()),
        ("task.schema.json", render::<Task>()),
        ("result.schema.json", render::<JobResult>()),
        ("event.schema.json", render::<Event>()),
        ("heartbeat.schema.json", render::<Heartbeat>()),
        ("control.schema.json", render::<Control>()),
    ]
}

fn render<T: JsonSchema>() -> String {
    let mut s = serde_json::to_string_pretty(&schema_for!(T)).expect("schemas serialise");
    s.push('\n');
    s
}
