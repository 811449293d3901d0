// Fused frame preprocess (the worker's models::preprocess; shaders/src/preprocess.wgsl does the
// same): packed RGB24 frames -> Pillow's antialiased bicubic resize in 22-bit fixed point
// (horizontal pass, then vertical, each rounded and clamped to u8) -> center crop (zeros outside
// the resized image) -> per-channel value table (rescale + normalise for each byte value, from
// the CPU) -> NCHW f32. Integer arithmetic in i32 as the reference, so the output is bit-exact.
// One thread per output pixel; `table` holds, per axis, the first input sample, the tap count
// and `taps_*` fixed-point weights per output position (the layout of shaders' preprocess plan).

struct Plan {
    int total, width, height, resized_w, resized_h, crop_w, crop_h, left, top;
    int taps_h, taps_v, start_h, count_h, weights_h, start_v, count_v, weights_v;
};

#define PRECISION_BITS 22
#define ROUNDING (1 << (PRECISION_BITS - 1))

__device__ __forceinline__ int clip8(int v) { return min(max(v >> PRECISION_BITS, 0), 255); }

extern "C" __global__ void preprocess_frames(const unsigned char *__restrict__ rgb, const int *__restrict__ table,
                                             const float *__restrict__ lut, float *__restrict__ out, Plan p) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= p.total) return;
    const int ox = o % p.crop_w, oy = (o / p.crop_w) % p.crop_h, frame = o / (p.crop_w * p.crop_h);
    const int rx = ox + p.left, ry = oy + p.top;
    int r = 0, g = 0, b = 0;
    if (rx >= 0 && ry >= 0 && rx < p.resized_w && ry < p.resized_h) {
        const int xs = table[p.start_h + rx], nh = table[p.count_h + rx];
        const int *wh = table + p.weights_h + rx * p.taps_h;
        const int ys = table[p.start_v + ry], nv = table[p.count_v + ry];
        const int *wv = table + p.weights_v + ry * p.taps_v;
        int vr = ROUNDING, vg = ROUNDING, vb = ROUNDING;
        for (int t = 0; t < nv; ++t) {
            const unsigned char *row = rgb + ((long long)(frame * p.height + ys + t) * p.width + xs) * 3;
            int hr = ROUNDING, hg = ROUNDING, hb = ROUNDING;
            for (int q = 0; q < nh; ++q) {
                const int wq = wh[q];
                hr += row[3 * q] * wq;
                hg += row[3 * q + 1] * wq;
                hb += row[3 * q + 2] * wq;
            }
            const int wt = wv[t];
            vr += clip8(hr) * wt;
            vg += clip8(hg) * wt;
            vb += clip8(hb) * wt;
        }
        r = clip8(vr);
        g = clip8(vg);
        b = clip8(vb);
    }
    const int plane = p.crop_w * p.crop_h;
    const long long first = (long long)frame * 3 * plane + oy * p.crop_w + ox;
    out[first] = lut[r];
    out[first + plane] = lut[256 + g];
    out[first + 2 * plane] = lut[512 + b];
}
