//! `reelforge models init-tiny`, `train mcvd` and `eval mcvd` as a user runs them.

use std::process::Command;

fn reelforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reelforge"))
}

#[test]
fn init_tiny_train_resume_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let out = reelforge().args(["models", "init-tiny", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tiny = dir.path().join("mcvd");
    assert!(tiny.join("config.json").is_file() && tiny.join("model.safetensors").is_file());

    let ckpt = dir.path().join("trained");
    for extra in [&[][..], &["--resume"][..]] {
        let out = reelforge()
            .args(["train", "mcvd", "--synthetic", "--steps", "2", "--batch-size", "2", "--out"])
            .arg(&ckpt)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let state = std::fs::read_to_string(ckpt.join("train_state.json")).unwrap();
    assert!(state.contains("\"step\": 4"), "{state}");

    let out =
        reelforge().args(["eval", "mcvd", "--sequences", "1", "--steps", "2", "--model"]).arg(&tiny).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for method in ["mcvd (ddpm, 2 steps)", "copy last frame", "linear extrapolation"] {
        assert!(stdout.contains(method), "{stdout}");
    }
}
