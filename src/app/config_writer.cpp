#include "ringlb/app/config_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringlb::app {

// Writes `text` to `path` so that a crash leaves either the old or the new file, never half of
// one: a temporary file, fsync, rename; the previous file is kept as path.bak.
std::string write_config_file(const std::string& path, const std::string& text) {
    const std::string temp = path + ".tmp";
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return "cannot create " + temp + ": " + std::strerror(errno);
    size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const std::string error = std::strerror(errno);
            ::close(fd);
            ::unlink(temp.c_str());
            return "cannot write " + temp + ": " + error;  // NOLINT(performance-inefficient-string-concatenation): error path
        }
        written += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(temp.c_str());
        return "cannot write " + temp + ": " + std::strerror(errno);
    }
    if (::access(path.c_str(), F_OK) == 0 && ::link(path.c_str(), (path + ".bak").c_str()) != 0) {
        if (errno == EEXIST) {
            ::unlink((path + ".bak").c_str());
            if (::link(path.c_str(), (path + ".bak").c_str()) != 0)
                return "cannot keep the previous file as " + path + ".bak: " + std::strerror(errno);
        } else {
            return "cannot keep the previous file as " + path + ".bak: " + std::strerror(errno);
        }
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        ::unlink(temp.c_str());
        return "cannot rename " + temp + " to " + path + ": " + std::strerror(errno);
    }
    return {};
}

}  // namespace ringlb::app
