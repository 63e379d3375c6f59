#include <sys/mman.h>

#include <cerrno>
#include <stdexcept>
#include <string>

#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

BufferMemory::BufferMemory(uint32_t buffer_size, uint32_t buffer_count)
    : buffer_size_(buffer_size), buffer_count_(buffer_count) {
    if (buffer_size == 0 || buffer_size > kMaxReceiveBuffer)
        throw std::invalid_argument("receive buffers of " + std::to_string(buffer_size) + " bytes: 1 to " +
                                    std::to_string(kMaxReceiveBuffer) + " allowed");
    const size_t bytes = static_cast<size_t>(buffer_size) * buffer_count;
    void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED)
        throw net::SystemError("mmap of " + std::to_string(bytes) + " bytes of receive buffers", errno);
    base_ = static_cast<std::byte*>(memory);
}

BufferMemory::~BufferMemory() { ::munmap(base_, static_cast<size_t>(buffer_size_) * buffer_count_); }

}  // namespace ringlb::engine
