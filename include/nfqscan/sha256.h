// Sha256: SHA-256 of a byte stream fed piece by piece (OpenSSL libcrypto's
// EVP interface), so an object's digest is ready when its last byte arrives
// without another pass over it. A cryptographic hash, because the verdict
// cache (src/scan/verdict_cache.h) trusts equal digests to mean equal bytes:
// an attacker must not be able to make a malicious object collide with a
// clean one.
#pragma once

#include <array>
#include <cstdint>
#include <span>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace nfqscan {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
  public:
    // Throws std::bad_alloc when OpenSSL cannot allocate its context.
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(std::span<const uint8_t> bytes);
    // The digest of the bytes so far; more may follow (a copy of the state
    // is finished, not the running one).
    Sha256Digest digest() const;
    // Forgets every byte: the digest of the empty string again.
    void reset();

    static Sha256Digest of(std::span<const uint8_t> bytes);

  private:
    evp_md_ctx_st* ctx_;
};

}  // namespace nfqscan
