#include <stddef.h>
#include <stdint.h>

/* Adler-32 of a buffer: a tiny piece of C for the benchmark's native build step. */
uint32_t bench_adler32(const unsigned char *data, size_t len) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < len; i++) {
        a = (a + data[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}
