// One ancestral DDPM step, elementwise, with Schedule::ddpm_step's arithmetic (scalars as f32
// uniforms, rounded on the CPU as candle rounds `tensor * f64`):
//   x0   = clamp((x - eps * s1) * inv_sa, -1, 1)
//   mean = x0 * c_x0 + x * c_x
//   out  = mean + noise * sigma      (only when `noisy`: not on the last step)

struct Params {
    len: u32,
    noisy: u32,
    s1: f32,
    inv_sa: f32,
    c_x0: f32,
    c_x: f32,
    sigma: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= p.len {
        return;
    }
    let xi = x[i];
    let x0 = clamp((xi - eps[i] * p.s1) * p.inv_sa, -1.0, 1.0);
    let mean = x0 * p.c_x0 + xi * p.c_x;
    if p.noisy == 1u {
        out[i] = mean + noise[i] * p.sigma;
    } else {
        out[i] = mean;
    }
}
