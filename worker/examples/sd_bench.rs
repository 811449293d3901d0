//! The Stable Diffusion UNet's step time on the CPU (f32), for the tiny test config and for SD
//! 2.1's real config with seeded random weights (nothing is downloaded): one UNet call with the
//! batch of classifier-free guidance (2), median of `--runs` after one warm-up. `--breakdown`
//! adds one traced call and prints the self time of every candle span (conv2d, linear, the
//! attention core, softmax, group norms inside resnet2d, …), i.e. where the time goes.
//!
//! ```sh
//! cargo run --release -p reelforge-worker --example sd_bench -- [--config tiny|v2_1|both] [--runs N] [--size PX] [--breakdown]
//! ```

mod timing;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use timing::median;

use candle_core::Device;
use tracing::span;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use worker::models::diffusion::SeededNoise;
use worker::models::sd::{self, UNetConfig};

const V2_1_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 96,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": true, "use_linear_projection": true
}"#;

/// Self time per span name (time inside the span minus time inside its child spans).
#[derive(Default)]
struct SelfTime {
    totals: Mutex<HashMap<&'static str, (Duration, u64)>>,
}

thread_local! {
    static STACK: RefCell<Vec<(&'static str, Instant, Duration)>> = const { RefCell::new(Vec::new()) };
}

struct Timing(&'static SelfTime);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Timing {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let name = ctx.span(id).map_or("?", |s| s.name());
        STACK.with(|s| s.borrow_mut().push((name, Instant::now(), Duration::ZERO)));
    }

    fn on_exit(&self, _: &span::Id, _: Context<'_, S>) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            let Some((name, start, children)) = s.pop() else { return };
            let total = start.elapsed();
            if let Some(parent) = s.last_mut() {
                parent.2 += total;
            }
            let mut t = self.0.totals.lock().unwrap();
            let e = t.entry(name).or_default();
            e.0 += total.saturating_sub(children);
            e.1 += 1;
        });
    }
}

fn bench(
    name: &str,
    cfg: &UNetConfig,
    latent: usize,
    tokens: usize,
    runs: usize,
    breakdown: Option<&'static SelfTime>,
) {
    let t = Instant::now();
    let tensors = sd::init_unet(cfg, &mut SeededNoise::new(1)).expect("init");
    let params: usize = tensors.values().map(|t| t.elem_count()).sum();
    let unet = sd::build_unet(cfg, tensors.clone()).expect("build");
    let init_s = t.elapsed().as_secs_f64();
    let mut rng = SeededNoise::new(2);
    let x = rng.normal_tensor(&[2, cfg.in_channels, latent, latent]).unwrap();
    let ctx = rng.normal_tensor(&[2, tokens, cfg.cross_attention_dim]).unwrap();
    let step = |unet: &worker::models::sd::UNet| {
        let t = Instant::now();
        let y = unet.forward(&x, 999.0, &ctx).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(sd::all_finite(&y).unwrap());
        secs
    };
    step(&unet);
    let times: Vec<f64> = (0..runs).map(|_| step(&unet)).collect();
    drop(unet);
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{name}: {:.1} M params, latents 2×{}×{latent}×{latent}, context 2×{tokens}×{}: UNet step median {:.3} s \
         (min {:.3} s, {runs} runs; init {init_s:.1} s)",
        params as f64 / 1e6,
        cfg.in_channels,
        cfg.cross_attention_dim,
        median(times.clone()),
        min
    );
    if let Some(st) = breakdown {
        // candle creates its spans when a module is built: build it again under the subscriber.
        let sub = tracing_subscriber::registry().with(Timing(st));
        let traced = tracing::subscriber::with_default(sub, || {
            let unet = sd::build_unet(cfg, tensors).expect("build");
            step(&unet);
            st.totals.lock().unwrap().clear();
            step(&unet)
        });
        let totals = st.totals.lock().unwrap();
        let sum: f64 = totals.values().map(|(d, _)| d.as_secs_f64()).sum();
        let mut rows: Vec<_> = totals.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
        println!("  breakdown of one traced step ({traced:.3} s; span self time, {sum:.3} s in spans):");
        for (span, (d, n)) in rows {
            let s = d.as_secs_f64();
            println!("    {span:<22} {s:>8.3} s {:>5.1}%  ({n} calls)", 100.0 * s / traced);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let which = arg("--config").unwrap_or_else(|| "both".into());
    let runs: Option<usize> = arg("--runs").map(|r| r.parse().expect("--runs N"));
    let size: usize = arg("--size").map_or(512, |r| r.parse().expect("--size PX"));
    let breakdown: Option<&'static SelfTime> =
        args.iter().any(|a| a == "--breakdown").then(|| &*Box::leak(Box::new(SelfTime::default())));
    println!(
        "candle CPU f32, {} threads (RAYON_NUM_THREADS / cores), device {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Device::Cpu
    );
    if which == "tiny" || which == "both" {
        let tok = sd::tiny_tokenizer().expect("tokenizer");
        let cfg = sd::tiny_configs(tok.get_vocab_size(true));
        bench(
            "tiny (32 px)",
            &cfg.unet,
            cfg.unet.sample_size,
            cfg.text_encoder.max_position_embeddings,
            runs.unwrap_or(20),
            breakdown,
        );
    }
    if which == "v2_1" || which == "both" {
        let cfg: UNetConfig = serde_json::from_str(V2_1_UNET).expect("2.1 config");
        bench(&format!("SD 2.1 UNet ({size} px)"), &cfg, size / 8, 77, runs.unwrap_or(3), breakdown);
    }
}
