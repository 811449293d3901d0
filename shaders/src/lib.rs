//! `shaders` owns reelforge's WGSL compute shaders and their wgpu launchers: the runner
//! ([`Gpu`]: adapter, device, pipeline cache, upload/dispatch/read-back) and one module per op,
//! each with its `.wgsl` source (`include_str!`) and a launcher taking flat slices and
//! dimensions and returning a `Vec`, the shape a candle `CustomOp` needs. The CPU references
//! the ops are tested against live in the worker (`worker/tests/shaders.rs`).

pub mod diffusion;
pub mod gpu;
pub mod group_norm;
pub mod preprocess;
pub mod upfirdn;
pub mod watermark;

pub use diffusion::{ddim_step, ddpm_step};
pub use gpu::{Dispatch, Gpu, GpuError, Input, Kernel};
pub use group_norm::{NchwGroups, group_norm_silu};
pub use preprocess::{AxisFilter, FramePreprocess, PixelFormat, preprocess_frames};
pub use upfirdn::{FirResample, upfirdn2d};
pub use watermark::{dct_correlate, dct_embed};
pub use wgpu;

#[cfg(test)]
mod tests {
    use super::gpu::{grid_1d, to_f32};
    use super::*;

    const ADD_ONE: Kernel = Kernel {
        name: "test_add_one",
        source: "struct P { len: u32 }
            @group(0) @binding(0) var<uniform> p: P;
            @group(0) @binding(1) var<storage, read> x: array<f32>;
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(256)
            fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
                let i = gid.y * nwg.x * 256u + gid.x;
                if i < p.len { y[i] = x[i] + 1.0; }
            }",
        entry: "main",
    };

    /// The device, or `None` with a note when the machine has no adapter and
    /// `REELFORGE_SKIP_GPU_TESTS=1`; a failure otherwise.
    fn gpu() -> Option<Gpu> {
        match Gpu::new() {
            Ok(g) => Some(g),
            Err(e) if std::env::var("REELFORGE_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
                eprintln!("skipped (REELFORGE_SKIP_GPU_TESTS=1): {e}");
                None
            }
            Err(e) => panic!("{e} (set REELFORGE_SKIP_GPU_TESTS=1 to skip the GPU tests)"),
        }
    }

    #[test]
    fn runs_a_kernel_and_caches_its_pipeline() {
        let Some(gpu) = gpu() else { return };
        assert!(!gpu.describe().is_empty());
        gpu.set_poison(true);
        for len in [1usize, 255, 256, 257, 70_001] {
            let x: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let d = Dispatch {
                params: &[len as u32],
                inputs: &[Input::F32(&x)],
                outputs: &[len + 3],
                workgroups: grid_1d(len),
            };
            let y = gpu.run(&ADD_ONE, &d).unwrap().remove(0);
            assert_eq!(y.len(), len + 3);
            let y = to_f32(y);
            assert!(y[..len].iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
            // Past the kernel's range the poison is left: NaN.
            assert!(y[len..].iter().all(|v| v.is_nan()));
        }
        assert_eq!(gpu.cached_pipelines(), 1);
    }

    #[test]
    fn grids_fold_into_y_past_the_dimension_limit() {
        use super::gpu::groups_1d;
        assert_eq!(grid_1d(0), (1, 1, 1));
        assert_eq!(grid_1d(257), (2, 1, 1));
        assert_eq!(grid_1d(65_535 * 256), (65_535, 1, 1));
        assert_eq!(grid_1d(65_535 * 256 + 1), (65_535, 2, 1));
        assert_eq!(groups_1d(67_200), (65_535, 2, 1));
    }

    #[test]
    fn a_broken_shader_is_an_error_not_a_panic() {
        let Some(gpu) = gpu() else { return };
        let bad = Kernel { name: "test_broken", source: "fn main() { let x: u32 = 1.5; }", entry: "main" };
        let d = Dispatch { params: &[], inputs: &[], outputs: &[1], workgroups: (1, 1, 1) };
        match gpu.run(&bad, &d) {
            Err(GpuError::Shader { kernel: "test_broken", .. }) => {}
            other => panic!("expected a shader error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_bindings_are_a_dispatch_error() {
        let Some(gpu) = gpu() else { return };
        // ADD_ONE needs an input and an output; give it only an output.
        let d = Dispatch { params: &[4], inputs: &[], outputs: &[4], workgroups: (1, 1, 1) };
        let r = gpu.run(&ADD_ONE, &d);
        assert!(matches!(r, Err(GpuError::Dispatch { .. })), "bad bindings must fail: {r:?}");
    }

    #[test]
    fn launchers_check_shapes() {
        let Some(gpu) = gpu() else { return };
        let dims = NchwGroups { n: 1, c: 6, h: 2, w: 2, groups: 4 };
        let e = group_norm_silu(&gpu, &[0.0; 24], dims, &[1.0; 6], &[0.0; 6], 1e-5).unwrap_err();
        assert!(matches!(e, GpuError::Shape { op: "group_norm_silu", .. }), "{e}");
    }
}
