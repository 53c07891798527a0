// The application protocols nfqscan inspects, and their names.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace nfqscan {

enum class Service : uint8_t { None = 0, Http, Smtp, Pop3, Imap, Ftp };
inline constexpr size_t kServiceCount = 6;

inline constexpr std::array<std::string_view, kServiceCount> kServiceNames = {
    "none", "http", "smtp", "pop3", "imap", "ftp"};

constexpr std::string_view service_name(Service s) {
    return kServiceNames[static_cast<size_t>(s)];
}

constexpr std::optional<Service> service_from_name(std::string_view name) {
    for (size_t i = 1; i < kServiceCount; ++i)
        if (kServiceNames[i] == name) return static_cast<Service>(i);
    return std::nullopt;
}

}  // namespace nfqscan
