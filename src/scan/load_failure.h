// What went wrong while building an EngineSet, pointing at the file (and line,
// when the engine tells) that an operator has to fix.
#pragma once

#include <cstdint>
#include <string>

namespace nfqscan {

struct LoadFailure {
    std::string file;  // empty when no single file is to blame
    uint32_t line = 0;
    std::string message;

    // "file:line: message", "file: message" or "message".
    std::string to_string() const {
        if (file.empty()) return message;
        if (line == 0) return file + ": " + message;
        return file + ":" + std::to_string(line) + ": " + message;
    }
};

}  // namespace nfqscan
