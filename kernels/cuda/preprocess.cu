// Fused frame preprocess (the worker's models::preprocess; shaders/src/preprocess.wgsl does the
// same): packed RGB24 or planar I420 frames (BT.601 limited range, converted per sample in
// integers, each chroma sample shared by its 2x2 block) -> Pillow's antialiased bicubic resize
// in 22-bit fixed point (horizontal pass, then vertical, each rounded and clamped to u8) ->
// center crop (zeros outside the resized image) -> per-channel value table (rescale + normalise
// for each byte value, from the CPU) -> NCHW f32 (`preprocess_frames`) or f16
// (`preprocess_frames_f16`, rounded to nearest even as the CPU's f32 -> f16). Integer arithmetic
// in i32 as the reference, so the output is bit-exact.
// One thread per output pixel; `table` holds, per axis, the first input sample, the tap count
// and `taps_*` fixed-point weights per output position (the layout of shaders' preprocess plan).

struct Plan {
    int total, width, height, resized_w, resized_h, crop_w, crop_h, left, top;
    int taps_h, taps_v, start_h, count_h, weights_h, start_v, count_v, weights_v;
    int format;  // 0: packed RGB24; 1: planar I420
};

#define PRECISION_BITS 22
#define ROUNDING (1 << (PRECISION_BITS - 1))

__device__ __forceinline__ int clip8(int v) { return min(max(v >> PRECISION_BITS, 0), 255); }
__device__ __forceinline__ int clamp8(int v) { return min(max(v, 0), 255); }

// The RGB of pixel (x, y) of `frame`.
__device__ __forceinline__ void pixel(const unsigned char *__restrict__ bytes, const Plan &p, int frame, int x, int y,
                                      int &r, int &g, int &b) {
    if (p.format == 0) {
        const unsigned char *px = bytes + ((long long)(frame * p.height + y) * p.width + x) * 3;
        r = px[0];
        g = px[1];
        b = px[2];
        return;
    }
    const long long luma = (long long)p.width * p.height;
    const int cw = (p.width + 1) / 2;
    const long long chroma = (long long)cw * ((p.height + 1) / 2);
    const unsigned char *base = bytes + frame * (luma + 2 * chroma);
    const int c = 298 * (base[(long long)y * p.width + x] - 16);
    const unsigned char *at = base + luma + (long long)(y / 2) * cw + x / 2;
    const int d = at[0] - 128, e = at[chroma] - 128;
    r = clamp8((c + 409 * e + 128) >> 8);
    g = clamp8((c - 100 * d - 208 * e + 128) >> 8);
    b = clamp8((c + 516 * d + 128) >> 8);
}

// Stores one output value: f32 as is, f16 (its bits) rounded to nearest even.
__device__ __forceinline__ void store(float *out, long long i, float v) { out[i] = v; }
__device__ __forceinline__ void store(unsigned short *out, long long i, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    out[i] = h;
}

template <typename T>
__device__ __forceinline__ void preprocess(const unsigned char *__restrict__ bytes, const int *__restrict__ table,
                                           const float *__restrict__ lut, T *__restrict__ out, const Plan &p) {
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
            int hr = ROUNDING, hg = ROUNDING, hb = ROUNDING;
            for (int q = 0; q < nh; ++q) {
                const int wq = wh[q];
                int pr, pg, pb;
                pixel(bytes, p, frame, xs + q, ys + t, pr, pg, pb);
                hr += pr * wq;
                hg += pg * wq;
                hb += pb * wq;
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
    store(out, first, lut[r]);
    store(out, first + plane, lut[256 + g]);
    store(out, first + 2 * plane, lut[512 + b]);
}

extern "C" __global__ void preprocess_frames(const unsigned char *__restrict__ bytes, const int *__restrict__ table,
                                             const float *__restrict__ lut, float *__restrict__ out, Plan p) {
    preprocess(bytes, table, lut, out, p);
}

// The same, writing f16 (as its bits).
extern "C" __global__ void preprocess_frames_f16(const unsigned char *__restrict__ bytes,
                                                 const int *__restrict__ table, const float *__restrict__ lut,
                                                 unsigned short *__restrict__ out, Plan p) {
    preprocess(bytes, table, lut, out, p);
}
