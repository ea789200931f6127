// Bit-packed XNOR-popcount convolution for +-1 weights and +-1 activations (docs/binary_inference.md).
//
// Built by `python -m methods.common.popcount_build` (run by `make install`) into build/native/, called through
// ctypes by methods/common/packed_binary.py. A plain C ABI on raw pointers: no torch headers, so it compiles in
// about a second; the caller owns every buffer and checks shapes.
//
// Packing: +1 -> bit 1, -1 -> bit 0 (the input bit is x >= 0, as sign() in models/binary_layers.py), 64 input
// channels per uint64 word, channels padded with 0 bits up to a whole word. Activations are stored per pixel
// ([N][H*W][Cw]); a weight row per output channel is [KH][KW][Cw] (tap-major), so the words of one output pixel's
// receptive field ("packed im2col row"; a tile of 8 pixels is built interleaved, [K][8], in a thread-local buffer) line up with it.
//
// For bits a, w of a real channel, (+-1)(+-1) = 1 - 2 (a xor w); channel padding bits are 0 on both sides, so
// they contribute 0 to the popcount. Spatial padding: the float model pads sign(x) with 0, which no bit can
// represent. A padded tap is filled with 0 words (value -1), so its popcount is popcount(w_tap) = pw[o][t]; the
// exact result subtracts it again:
//     out = n_valid_taps * C - 2 * (sum_k popcount(row[k] xor w[o][k]) - sum_{padded t} pw[o][t])
// an integer, stored exactly as float32 (|out| <= KH*KW*C < 2^24).
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int TILE = 8;   // output pixels per micro-kernel: each weight word loaded once serves 8 pixels

inline int popc(uint64_t v) { return __builtin_popcountll(v); }

}  // namespace

extern "C" {

int bp_abi_version() { return 1; }

// x: float [N][C][HW] contiguous -> out: uint64 [N][HW][Cw], Cw = ceil(C / 64).
void bp_pack_nchw(const float* x, int64_t N, int64_t C, int64_t HW, uint64_t* out, int nthreads) {
    const int64_t Cw = (C + 63) / 64;
    const int64_t ptiles = (HW + 63) / 64;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t job = 0; job < N * ptiles; ++job) {
        const int64_t n = job / ptiles, p0 = (job % ptiles) * 64;
        const int64_t p1 = p0 + 64 < HW ? p0 + 64 : HW;
        uint64_t* o = out + (n * HW + p0) * Cw;
        std::memset(o, 0, sizeof(uint64_t) * (p1 - p0) * Cw);
        for (int64_t c = 0; c < C; ++c) {
            const float* xc = x + (n * C + c) * HW;
            const int64_t word = c >> 6;
            const int bit = int(c & 63);
            for (int64_t p = p0; p < p1; ++p)
                o[(p - p0) * Cw + word] |= uint64_t(xc[p] >= 0.0f) << bit;
        }
    }
}

// a: packed input [N][H*W][Cw]; w: packed weights [O][KH*KW*Cw]; pw: int32 [O][KH*KW], popcount of each weight
// tap (used for padded taps); out: float [N][O][OH*OW].
void bp_conv2d(const uint64_t* a, int64_t N, int64_t C, int64_t H, int64_t W, const uint64_t* w,
               const int32_t* pw, int64_t O, int64_t KH, int64_t KW, int64_t stride, int64_t pad, int64_t OH,
               int64_t OW, float* out, int nthreads) {
    const int64_t Cw = (C + 63) / 64, T = KH * KW, K = T * Cw, P = OH * OW;
    const int64_t tiles = (P + TILE - 1) / TILE;
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<uint64_t> rows(TILE * K);
        std::vector<int32_t> padded(TILE * T);   // padded tap indices per pixel of the tile
        int npad[TILE];
        int nvalid[TILE];
#pragma omp for schedule(static)
        for (int64_t job = 0; job < N * tiles; ++job) {
            const int64_t n = job / tiles, p0 = (job % tiles) * TILE;
            const int np = int(P - p0 < TILE ? P - p0 : TILE);
            bool any_pad = false;
            for (int j = 0; j < TILE; ++j) {      // build the packed im2col rows of this tile, interleaved [K][TILE]
                npad[j] = 0;
                nvalid[j] = 0;
                if (j >= np) {                    // past the last pixel: zero words, outputs discarded
                    for (int64_t k = 0; k < K; ++k) rows[k * TILE + j] = 0;
                    continue;
                }
                const int64_t oh = (p0 + j) / OW, ow = (p0 + j) % OW;
                for (int64_t kh = 0; kh < KH; ++kh) {
                    const int64_t ih = oh * stride - pad + kh;
                    for (int64_t kw = 0; kw < KW; ++kw) {
                        const int64_t iw = ow * stride - pad + kw, t = kh * KW + kw;
                        uint64_t* dst = rows.data() + t * Cw * TILE + j;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                            for (int64_t cw = 0; cw < Cw; ++cw) dst[cw * TILE] = 0;
                            padded[j * T + npad[j]++] = int32_t(t);
                            any_pad = true;
                        } else {
                            const uint64_t* src = a + ((n * H + ih) * W + iw) * Cw;
                            for (int64_t cw = 0; cw < Cw; ++cw) dst[cw * TILE] = src[cw];
                            ++nvalid[j];
                        }
                    }
                }
            }
            const uint64_t* r = rows.data();
            float* obase = out + n * O * P + p0;
            for (int64_t o = 0; o < O; ++o) {
                const uint64_t* wo = w + o * K;
                int64_t acc[TILE] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int64_t k = 0; k < K; ++k) {
                    const uint64_t wk = wo[k];
#pragma GCC unroll 8
                    for (int j = 0; j < TILE; ++j) acc[j] += popc(r[k * TILE + j] ^ wk);
                }
                if (any_pad) {
                    const int32_t* pwo = pw + o * T;
                    for (int j = 0; j < np; ++j)
                        for (int i = 0; i < npad[j]; ++i) acc[j] -= pwo[padded[j * T + i]];
                }
                float* oo = obase + o * P;
                for (int j = 0; j < np; ++j) oo[j] = float(int64_t(nvalid[j]) * C - 2 * acc[j]);
            }
        }
    }
}

}  // extern "C"
