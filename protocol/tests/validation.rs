//! Every refusal names the field and the reason.

use protocol::{ErrorCode, Job, ProtocolError, ValidationContext};
use serde_json::{Value, json};

fn edit() -> Value {
    json!({
        "v": 1, "kind": "edit", "job_id": "j-1", "tenant": "acme",
        "source": "s3://acme-in/videos/a.mp4",
        "guidance": { "instruction": "surf" }
    })
}

fn create() -> Value {
    json!({
        "v": 1, "kind": "create", "job_id": "c-1", "tenant": "acme", "mode": "generate",
        "frames": 8, "size": { "width": 64, "height": 64 }
    })
}

fn parse(v: &Value) -> Result<Job, ProtocolError> {
    Job::from_json(v.to_string().as_bytes(), &ValidationContext::default())
}

/// Applies `f` to a fresh edit job and returns the error's (path, problem).
fn edit_err(f: impl FnOnce(&mut Value)) -> (String, String) {
    let mut v = edit();
    f(&mut v);
    match parse(&v) {
        Err(ProtocolError::Invalid(e)) => (e.path, e.problem),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn minimal_jobs_parse_with_defaults() {
    let Job::Edit(e) = parse(&edit()).unwrap() else { panic!() };
    assert_eq!(e.priority, protocol::limits::DEFAULT_PRIORITY);
    assert_eq!(e.options.clips, 3);
    assert_eq!(e.profile, "default");
    let Job::Create(c) = parse(&create()).unwrap() else { panic!() };
    assert_eq!(c.fps, 8);
    assert_eq!(c.sampler.steps, 50);
}

#[test]
fn version_errors() {
    let mut v = edit();
    v.as_object_mut().unwrap().remove("v");
    assert_eq!(parse(&v).unwrap_err(), ProtocolError::MissingVersion);
    v["v"] = json!(2);
    let e = parse(&v).unwrap_err();
    assert!(matches!(&e, ProtocolError::UnsupportedVersion { found } if found == "2"), "{e}");
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    v["v"] = json!("1");
    assert!(matches!(parse(&v).unwrap_err(), ProtocolError::UnsupportedVersion { .. }));
}

#[test]
fn missing_and_unknown_fields() {
    let (path, problem) = edit_err(|v| {
        v.as_object_mut().unwrap().remove("source");
    });
    assert_eq!(path, ".");
    assert!(problem.contains("missing field `source`"), "{problem}");

    let (path, problem) = edit_err(|v| v["colour"] = json!("red"));
    assert!(problem.contains("unknown field `colour`"), "{path}: {problem}");

    let (path, problem) = edit_err(|v| v["guidance"]["mood"] = json!("x"));
    assert_eq!(path, "guidance.mood");
    assert!(problem.contains("unknown field `mood`"), "{problem}");

    let (path, problem) = edit_err(|v| v["kind"] = json!("remix"));
    assert_eq!(path, "kind");
    assert!(problem.contains("remix"));
}

#[test]
fn out_of_range_numbers() {
    let (path, p) = edit_err(|v| v["priority"] = json!(10));
    assert_eq!((path.as_str(), p.contains("0 to 9")), ("priority", true), "{p}");
    let (path, p) = edit_err(|v| v["priority"] = json!(300));
    assert_eq!(path, "priority");
    assert!(p.contains("300"), "{p}");
    let (path, _) = edit_err(|v| v["options"] = json!({ "clips": 0 }));
    assert_eq!(path, "options.clips");
    let (path, _) = edit_err(|v| v["options"] = json!({ "clip_seconds_min": 5.0, "clip_seconds_max": 3.0 }));
    assert_eq!(path, "options.clip_seconds_max");
    let (path, _) = edit_err(|v| v["options"] = json!({ "output_size": { "width": 641, "height": 360 } }));
    assert_eq!(path, "options.output_size.width");
    let (path, p) = edit_err(|v| v["options"] = json!({ "shot_threshold": 300.0 }));
    assert_eq!((path.as_str(), p.contains("0 to 255")), ("options.shot_threshold", true), "{p}");
    let (path, _) = edit_err(|v| v["options"] = json!({ "shot_threshold": -1 }));
    assert_eq!(path, "options.shot_threshold");

    let mut c = create();
    c["frames"] = json!(5000);
    let Err(ProtocolError::Invalid(e)) = parse(&c) else { panic!() };
    assert_eq!(e.path, "frames");
    let mut c = create();
    c["sampler"] = json!({ "kind": "ddim", "steps": 0 });
    let Err(ProtocolError::Invalid(e)) = parse(&c) else { panic!() };
    assert_eq!(e.path, "sampler.steps");
}

#[test]
fn bad_keys_and_uris() {
    for (uri, needle) in [
        ("s3://acme-in/../other/a.mp4", ".."),
        ("s3://acme-in//etc/passwd", "relative"),
        ("s3://acme-in/a\u{0}b.mp4", "control"),
        ("/etc/passwd", "unsupported"),
        ("file:///tmp/a.mp4", "embedded"),
    ] {
        let (path, p) = edit_err(|v| v["source"] = json!(uri));
        assert_eq!(path, "source");
        assert!(p.contains(needle), "{uri}: {p}");
    }
    let (path, _) = edit_err(|v| v["job_id"] = json!("../x"));
    assert_eq!(path, "job_id");
    // `.` passed once and its result key was refused by every store: the job looped forever.
    let (path, p) = edit_err(|v| v["job_id"] = json!("."));
    assert_eq!(path, "job_id");
    assert!(p.contains("`.`"), "{p}");
    // Every id that is accepted makes a valid output key.
    for id in ["a", ".a", "a.", "a.b", "...a", ".-", ":", "_"] {
        let mut v = edit();
        v["job_id"] = json!(id);
        match Job::from_json(v.to_string().as_bytes(), &ValidationContext::default()) {
            Ok(job) => protocol::media::check_key(&format!("acme/{}/result.json", job.job_id())).unwrap(),
            Err(e) => assert!(id.contains(".."), "{id}: {e}"),
        }
    }
    let (path, _) = edit_err(|v| v["tenant"] = json!("Acme"));
    assert_eq!(path, "tenant");
    let (path, p) = edit_err(|v| v["guidance"]["instruction"] = json!("a\u{1b}[31mred"));
    assert_eq!(path, "guidance.instruction");
    assert!(p.contains("control"));
    // Local files are fine in embedded mode.
    let mut v = edit();
    v["source"] = json!("file:///tmp/a.mp4");
    let ctx = ValidationContext { allow_local_media: true };
    Job::from_json(v.to_string().as_bytes(), &ctx).unwrap();
}

#[test]
fn history_rules() {
    let (path, p) = edit_err(|v| v["guidance"]["history"] = json!([{ "item_id": "a" }]));
    assert_eq!(path, "guidance.history[0]");
    assert!(p.contains("exactly one"));
    let (path, _) = edit_err(|v| {
        v["guidance"]["history"] = json!([
            { "item_id": "a", "embedding": [1.0, 0.0] },
            { "item_id": "b", "embedding": [1.0, 0.0, 0.0] }
        ])
    });
    assert_eq!(path, "guidance.history[1].embedding");
    let (path, _) = edit_err(|v| v["guidance"]["history"] = json!([{ "item_id": "a", "embedding": [0.0, 0.0] }]));
    assert_eq!(path, "guidance.history[0].embedding");
    let (path, p) = edit_err(|v| v["guidance"]["history"] = json!([{ "item_id": "a", "embedding": [1e39] }]));
    assert!(path.starts_with("guidance.history[0].embedding"), "{path}: {p}");
}

#[test]
fn create_mode_rules() {
    let mut c = create();
    c["mode"] = json!("predict");
    let Err(ProtocolError::Invalid(e)) = parse(&c) else { panic!() };
    assert_eq!(e.path, "conditioning");
    c["conditioning"] = json!({ "source": "s3://acme-in/a.mp4", "start_s": 2.0, "end_s": 1.0 });
    let Err(ProtocolError::Invalid(e)) = parse(&c) else { panic!() };
    assert_eq!(e.path, "conditioning.end_s");
    c["conditioning"]["end_s"] = json!(3.0);
    parse(&c).unwrap();
}

#[test]
fn oversize_and_non_json() {
    let mut v = edit();
    v["guidance"]["instruction"] = json!("x".repeat(protocol::limits::MAX_JOB_BYTES));
    let e = parse(&v).unwrap_err();
    assert!(matches!(e, ProtocolError::TooLarge { .. }));
    assert_eq!(e.code(), ErrorCode::JobTooLarge);
    let (_, p) = edit_err(|v| v["guidance"]["instruction"] = json!("y".repeat(5000)));
    assert!(p.contains("over the limit"));
    assert!(matches!(Job::from_json(b"{not json", &Default::default()), Err(ProtocolError::Syntax(_))));
    assert!(matches!(Job::from_json(b"[1,2]", &Default::default()), Err(ProtocolError::Syntax(_))));
    // Deep nesting is refused by the parser's recursion limit, not by a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(matches!(Job::from_json(deep.as_bytes(), &Default::default()), Err(ProtocolError::Syntax(_))));
}

#[test]
fn deadline_must_be_rfc3339() {
    let mut v = edit();
    v["deadline"] = json!("tomorrow");
    let Err(ProtocolError::Invalid(e)) = parse(&v) else { panic!() };
    assert_eq!(e.path, "deadline");
    v["deadline"] = json!("2031-05-01T12:00:00+02:00");
    let Job::Edit(j) = parse(&v).unwrap() else { panic!() };
    assert_eq!(j.deadline.unwrap().to_rfc3339(), "2031-05-01T10:00:00+00:00");
}

#[test]
fn generate_options_defaults_and_limits() {
    let Job::Edit(e) = parse(&edit()).unwrap() else { panic!() };
    let g = &e.options.generate;
    assert_eq!((g.steps, g.strength, g.guidance_scale, g.candidates, g.seed), (30, 0.6, 7.5, 2, 0));
    assert_eq!(g.negative_prompt, None);

    let mut ok = edit();
    ok["options"] = json!({ "thumbnail": "generate", "generate": {
        "steps": 4, "strength": 0.0, "guidance_scale": 0.0, "negative_prompt": "blurry", "seed": 7, "candidates": 8 } });
    let Job::Edit(e) = parse(&ok).unwrap() else { panic!() };
    assert_eq!(e.options.generate.negative_prompt.as_deref(), Some("blurry"));
    assert_eq!((e.options.generate.seed, e.options.generate.candidates), (7, 8));

    for (field, bad, needle) in [
        ("steps", json!(0), "1 to 200"),
        ("steps", json!(201), "1 to 200"),
        ("strength", json!(1.5), "0 to 1"),
        ("strength", json!(-0.1), "0 to 1"),
        ("guidance_scale", json!(31.0), "0 to 30"),
        ("candidates", json!(0), "1 to 8"),
        ("candidates", json!(9), "1 to 8"),
        ("negative_prompt", json!("a\u{7}b"), "control"),
    ] {
        let (path, p) = edit_err(|v| v["options"] = json!({ "generate": { field: bad } }));
        assert_eq!(path, format!("options.generate.{field}"), "{p}");
        assert!(p.contains(needle), "{field}: {p}");
    }
    let (path, _) = edit_err(|v| v["options"] = json!({ "generate": { "sampler": "ddim" } }));
    assert!(path.starts_with("options.generate"), "{path}");
}

#[test]
fn jobs_over_the_memory_budget_are_too_large() {
    let mut c = create();
    c["frames"] = json!(1024);
    c["size"] = json!({ "width": 4096, "height": 4096 });
    let job = parse(&c).unwrap();
    let err = job.check_memory(protocol::job::DEFAULT_JOB_MEMORY_BYTES).unwrap_err();
    assert_eq!(err.code(), protocol::ErrorCode::JobTooLarge);
    let msg = err.to_string();
    assert!(
        msg.contains("1024 frames at 4096x4096") && msg.contains("262144 MiB") && msg.contains("16384 MiB"),
        "{msg}"
    );
    // A small one fits; an edit job is bounded where its input is decoded.
    assert!(parse(&create()).unwrap().check_memory(protocol::job::DEFAULT_JOB_MEMORY_BYTES).is_ok());
    assert!(parse(&edit()).unwrap().check_memory(0).is_ok());
}
