#include "nfqscan/sha256.h"

#include <openssl/evp.h>

#include <new>
#include <stdexcept>

namespace nfqscan {
namespace {

// The EVP calls fail only on allocation failure or a broken library; both
// are out of memory to the caller.
void check(int ok) {
    if (ok != 1) throw std::bad_alloc();
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr) throw std::bad_alloc();
    try {
        reset();
    } catch (...) {
        EVP_MD_CTX_free(ctx_);
        throw;
    }
}

Sha256::~Sha256() {
    EVP_MD_CTX_free(ctx_);
}

void Sha256::reset() {
    check(EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr));
}

void Sha256::update(std::span<const uint8_t> bytes) {
    if (!bytes.empty()) check(EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()));
}

Sha256Digest Sha256::digest() const {
    Sha256Digest out{};
    EVP_MD_CTX* copy = EVP_MD_CTX_new();
    if (copy == nullptr) throw std::bad_alloc();
    unsigned int n = 0;
    const bool ok = EVP_MD_CTX_copy_ex(copy, ctx_) == 1 &&
                    EVP_DigestFinal_ex(copy, out.data(), &n) == 1 && n == out.size();
    EVP_MD_CTX_free(copy);
    check(ok ? 1 : 0);
    return out;
}

Sha256Digest Sha256::of(std::span<const uint8_t> bytes) {
    Sha256Digest out{};
    unsigned int n = 0;
    check(EVP_Digest(bytes.data(), bytes.size(), out.data(), &n, EVP_sha256(), nullptr));
    return out;
}

}  // namespace nfqscan
