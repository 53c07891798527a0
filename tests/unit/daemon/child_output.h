// Tests that change what a process is (its user, its capabilities) run that
// part in a forked child, which reports back through a pipe.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <string>

namespace nfqscan::test {

// Runs `body` in a child process and returns what it returned (an exception
// becomes "error WHAT\n"). The child leaves by _exit.
inline std::string output_of_child(const std::function<std::string()>& body) {
    int out[2];
    if (pipe(out) != 0) return "error pipe\n";
    const pid_t child = fork();
    if (child == 0) {
        close(out[0]);
        std::string text;
        try {
            text = body();
        } catch (const std::exception& e) {
            text = std::string("error ") + e.what() + "\n";
        }
        (void)!write(out[1], text.data(), text.size());
        _exit(0);
    }
    close(out[1]);
    std::string got;
    char buffer[1024];
    for (ssize_t n; (n = read(out[0], buffer, sizeof buffer)) > 0;)
        got.append(buffer, size_t(n));
    close(out[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status)) got += "error the child did not exit normally\n";
    return got;
}

}  // namespace nfqscan::test
