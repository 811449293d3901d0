// Fused GroupNorm + SiLU over an NCHW f32 tensor, one workgroup per (batch item, group): the
// group's mean, then its variance about that mean (two passes, as candle_nn::GroupNorm), then
// y = silu((x - mean) / sqrt(var + eps) * weight[c] + bias[c]) written in place of nothing else.

struct Params {
    // Groups in all: batch × num_groups.
    total_groups: u32,
    num_groups: u32,
    channels: u32,
    // Channels per group.
    group_channels: u32,
    // H × W.
    plane: u32,
    // 1: weight and bias hold one value per (batch item, channel); 0: per channel.
    per_item: u32,
    // f32(1 / (group_channels × plane)), as candle divides by a scalar.
    inv_count: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// The sum of every invocation's `v`, returned to all of them.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
) {
    let lid = lid3.x;
    let ng = wid.y * nwg.x + wid.x;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    if ng >= p.total_groups {
        return;
    }
    let item = ng / p.num_groups;
    let group = ng % p.num_groups;
    let count = p.group_channels * p.plane;
    let base = ng * count;

    var s = 0.0;
    for (var i = lid; i < count; i += WG) {
        s += x[base + i];
    }
    let mean = workgroup_sum(lid, s) * p.inv_count;

    var q = 0.0;
    for (var i = lid; i < count; i += WG) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    let sd = sqrt(workgroup_sum(lid, q) * p.inv_count + p.eps);

    for (var i = lid; i < count; i += WG) {
        let c = group * p.group_channels + i / p.plane;
        let a = select(c, item * p.channels + c, p.per_item == 1u);
        let v = (x[base + i] - mean) / sd * weight[a] + bias[a];
        y[base + i] = v / (1.0 + exp(-v));
    }
}
