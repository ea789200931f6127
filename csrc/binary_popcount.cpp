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
// an integer, stored exactly as float32 (|out| <= KH*KW*C < 2^24; counts are int32).
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int TILE = 8;   // output pixels per micro-kernel: each weight word loaded once serves 8 pixels

inline int popc(uint64_t v) { return __builtin_popcountll(v); }

// acc[j] = sum_k popcount(rows[k][j] xor wo[k]) for the 8 pixels j of a tile (rows interleaved [K][TILE]).
inline void tile_popcounts(const uint64_t* rows, const uint64_t* wo, int64_t K, int32_t* acc) {
#ifdef __AVX2__
    // Nibble-table popcount (vpshufb) on 4 pixels per vector, byte counts summed for up to 31 words (31 * 8 < 256)
    // before vpsadbw widens them to 64-bit lanes: ~2 vector ops per word beside the scalar ALUs' 3 (xor, popcnt,
    // add), about 1.4x the scalar loop on Zen 3.
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    __m256i sum0 = zero, sum1 = zero;
    for (int64_t k0 = 0; k0 < K; k0 += 31) {
        const int64_t k1 = k0 + 31 < K ? k0 + 31 : K;
        __m256i b0 = zero, b1 = zero;
        for (int64_t k = k0; k < k1; ++k) {
            const __m256i w = _mm256_set1_epi64x(int64_t(wo[k]));
            const __m256i v0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(rows + k * TILE)), w);
            const __m256i v1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(rows + k * TILE + 4)), w);
            b0 = _mm256_add_epi8(b0, _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, _mm256_and_si256(v0, low)),
                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v0, 4), low))));
            b1 = _mm256_add_epi8(b1, _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, _mm256_and_si256(v1, low)),
                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v1, 4), low))));
        }
        sum0 = _mm256_add_epi64(sum0, _mm256_sad_epu8(b0, zero));
        sum1 = _mm256_add_epi64(sum1, _mm256_sad_epu8(b1, zero));
    }
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);   // low halves of the 64-bit lanes
    _mm256_storeu_si256((__m256i*)acc, _mm256_blend_epi32(_mm256_permutevar8x32_epi32(sum0, even),
                                                          _mm256_permutevar8x32_epi32(sum1, even), 0xF0));
#else
    int64_t a[TILE] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < K; ++k) {
        const uint64_t wk = wo[k];
#pragma GCC unroll 8
        for (int j = 0; j < TILE; ++j) a[j] += popc(rows[k * TILE + j] ^ wk);
    }
    for (int j = 0; j < TILE; ++j) acc[j] = int32_t(a[j]);
#endif
}

}  // namespace

extern "C" {

int bp_abi_version() { return 2; }   // 2: the library also holds sk_accumulate (sketch_associative.cpp)

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
        int32_t base[TILE];                       // n_valid_taps * C per pixel
#pragma omp for schedule(static)
        for (int64_t job = 0; job < N * tiles; ++job) {
            const int64_t n = job / tiles, p0 = (job % tiles) * TILE;
            const int np = int(P - p0 < TILE ? P - p0 : TILE);
            bool any_pad = false;
            for (int j = 0; j < TILE; ++j) {      // build the packed im2col rows of this tile, interleaved [K][TILE]
                npad[j] = 0;
                base[j] = 0;
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
                            base[j] += int32_t(C);
                        }
                    }
                }
            }
            const uint64_t* r = rows.data();
            float* obase = out + n * O * P + p0;
            for (int64_t o = 0; o < O; ++o) {
                const uint64_t* wo = w + o * K;
                int32_t acc[TILE];
                tile_popcounts(r, wo, K, acc);
                if (any_pad) {
                    const int32_t* pwo = pw + o * T;
                    for (int j = 0; j < np; ++j)
                        for (int i = 0; i < npad[j]; ++i) acc[j] -= pwo[padded[j * T + i]];
                }
                float* oo = obase + o * P;
                if (np == TILE) {
                    for (int j = 0; j < TILE; ++j) oo[j] = float(base[j] - 2 * acc[j]);
                } else {
                    for (int j = 0; j < np; ++j) oo[j] = float(base[j] - 2 * acc[j]);
                }
            }
        }
    }
}

}  // extern "C"
