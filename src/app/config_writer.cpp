#include "ringlb/app/config_writer.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <system_error>

#include "ringlb/net/socket.hpp"

namespace ringlb::app {
namespace {

constexpr int kNameAttempts = 16;

std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

// A failure of the whole write: carries the message to the caller.
struct WriteFailure {
    std::string message;
};

std::string directory_of(const std::string& path) {
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

std::string file_name_of(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

std::string whoami() { return "uid " + std::to_string(::geteuid()) + ", gid " + std::to_string(::getegid()); }

// What is at `path` now (nullopt: nothing), or why it must not be replaced.
std::optional<struct stat> check_target(const std::string& path) {
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0) {
        if (errno == ENOENT) return std::nullopt;
        throw WriteFailure{"cannot examine " + path + ": " + errno_text(errno)};
    }
    if (S_ISLNK(status.st_mode))
        throw WriteFailure{path + " is a symbolic link (a mounted ConfigMap or a file managed elsewhere?): not "
                                  "replacing it; change the file it points to instead"};
    if (!S_ISREG(status.st_mode)) throw WriteFailure{path + " is not a regular file: not replacing it"};
    if ((status.st_mode & 0222) == 0)
        throw WriteFailure{path + " is read-only (mode " + mode_text(status.st_mode) + "): not replacing it"};
    if (::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0)
        throw WriteFailure{path + " is not writable by this process (" + whoami() + "): " + errno_text(errno)};
    return status;
}

std::string random_suffix() {
    unsigned char bytes[8];
    if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes))
        throw WriteFailure{"cannot get random bytes for a temporary file name: " + errno_text(errno)};
    std::string hex;
    for (const unsigned char byte : bytes) {
        char pair[3];
        std::snprintf(pair, sizeof pair, "%02x", byte);
        hex += pair;
    }
    return hex;
}

// A temporary file next to the target, removed on destruction unless committed.
class TemporaryFile {
public:
    explicit TemporaryFile(const std::string& target) {
        const std::string prefix = directory_of(target) + "/." + file_name_of(target) + ".";
        for (int attempt = 0; attempt < kNameAttempts; ++attempt) {
            path_ = prefix + random_suffix() + ".tmp";
            const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd >= 0) {
                fd_.reset(fd);
                return;
            }
            if (errno != EEXIST)
                throw WriteFailure{"cannot create a temporary file in " + directory_of(target) + " (" + whoami() +
                                   "): " + errno_text(errno)};
        }
        throw WriteFailure{"cannot find a free temporary file name in " + directory_of(target)};
    }
    ~TemporaryFile() {
        if (!committed_) ::unlink(path_.c_str());
    }
    TemporaryFile(const TemporaryFile&) = delete;
    TemporaryFile& operator=(const TemporaryFile&) = delete;

    void write_all(const std::string& text) {
        size_t written = 0;
        while (written < text.size()) {
            const ssize_t n = ::write(fd_.get(), text.data() + written, text.size() - written);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw WriteFailure{"cannot write " + path_ + ": " + errno_text(n < 0 ? errno : EIO)};
            written += static_cast<size_t>(n);
        }
    }

    // The old file's owner and mode: a config holding tokens must not become world-readable.
    void take_owner_and_mode(const std::optional<struct stat>& previous, const std::string& target) {
        const mode_t mode = previous ? previous->st_mode & 07777 : 0600;
        if (previous && (previous->st_uid != ::geteuid() || previous->st_gid != ::getegid()) &&
            ::fchown(fd_.get(), previous->st_uid, previous->st_gid) != 0)
            throw WriteFailure{"cannot give the new file the owner of " + target + " (uid " +
                               std::to_string(previous->st_uid) + ", gid " + std::to_string(previous->st_gid) +
                               ") as " + whoami() + ": " + errno_text(errno) + "; not replacing it"};
        // After fchown, which may clear set-id bits.
        if (::fchmod(fd_.get(), mode) != 0)
            throw WriteFailure{"cannot set mode " + mode_text(mode) + " on " + path_ + ": " + errno_text(errno)};
    }

    void sync_and_close() {
        if (::fsync(fd_.get()) != 0) throw WriteFailure{"cannot sync " + path_ + ": " + errno_text(errno)};
        if (::close(fd_.release()) != 0) throw WriteFailure{"cannot write " + path_ + ": " + errno_text(errno)};
    }

    void rename_to(const std::string& target) {
        if (::rename(path_.c_str(), target.c_str()) != 0)
            throw WriteFailure{"cannot rename " + path_ + " to " + target + ": " + errno_text(errno)};
        committed_ = true;
    }

private:
    std::string path_;
    net::UniqueFd fd_;
    bool committed_ = false;
};

// path.1 .. path.(backups-1) move one up (the oldest drops out), then path.1 becomes a second
// name of the current file: the rename that follows leaves it holding the previous version, with
// its owner and mode.
std::string keep_previous(const std::string& path, unsigned backups) {
    if (backups == 0) return {};
    const auto numbered = [&](unsigned n) { return path + "." + std::to_string(n); };
    for (unsigned n = backups - 1; n >= 1; --n)
        if (::rename(numbered(n).c_str(), numbered(n + 1).c_str()) != 0 && errno != ENOENT)
            throw WriteFailure{"cannot move " + numbered(n) + " to " + numbered(n + 1) + ": " + errno_text(errno)};
    std::string newest = numbered(1);
    if (::link(path.c_str(), newest.c_str()) != 0) {
        // Left over when backups is 1, or made since the rename: replace it.
        if (errno != EEXIST || ::unlink(newest.c_str()) != 0 || ::link(path.c_str(), newest.c_str()) != 0)
            throw WriteFailure{"cannot keep the previous file as " + newest + ": " + errno_text(errno)};
    }
    return newest;
}

void sync_directory(const std::string& directory, const std::string& path) {
    const net::UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0)
        throw WriteFailure{path + " was replaced, but syncing its directory " + directory +
                           " failed (the change may not survive a crash): " + errno_text(errno)};
}

}  // namespace

ConfigWriteResult write_config_file(const std::string& path, const std::string& text, unsigned backups) {
    ConfigWriteResult result;
    try {
        const std::optional<struct stat> previous = check_target(path);
        TemporaryFile temporary(path);
        temporary.write_all(text);
        temporary.take_owner_and_mode(previous, path);
        temporary.sync_and_close();
        if (previous) result.backup = keep_previous(path, backups);
        temporary.rename_to(path);
        sync_directory(directory_of(path), path);
    } catch (const WriteFailure& failure) {
        result.error = failure.message;
    }
    return result;
}

}  // namespace ringlb::app
