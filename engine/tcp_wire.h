// The plumbing under TcpStore (engine/tcp_store.h): non-blocking IPv4 sockets owned by RAII
// handles, waits against a deadline, and the store's message framing. Nothing here blocks
// without a time limit, EINTR is retried, and sends use MSG_NOSIGNAL (a closed peer is an error
// code, never SIGPIPE). Functions report I/O outcomes as values; TcpStore turns them into errors
// that name the rank and the operation.
//
// A message is a 32-byte header, little-endian, then `length` payload bytes:
//   "kdTS" magic | u16 version | u16 type | u64 seq | i64 arg | u64 length
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kd::wire {

class Deadline {
 public:
  explicit Deadline(double seconds);
  bool passed() const;
  // Milliseconds left for poll(): 0 when passed, rounded up so that a wait never ends early.
  int poll_ms() const;

 private:
  std::chrono::steady_clock::time_point at_;
};

// Owns a file descriptor; closes it on destruction. Move-only.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { reset(); }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  void reset();

 private:
  int fd_ = -1;
};

enum class Type : uint16_t {
  hello = 1,     // rank -> 0: arg = rank, payload = u64 size
  welcome = 2,   // 0 -> rank: every rank has arrived
  reject = 3,    // 0 -> connection: payload = why (text)
  abort = 4,     // 0 -> rank: the store failed; payload = the error (text)
  progress = 5,  // rank -> 0: arg = the rank's progress counter
  barrier = 16,  // collectives: request rank -> 0 and reply 0 -> rank; arg = root (broadcast)
  broadcast = 17,
  all_gather = 18,
};

struct Message {
  Type type = Type::hello;
  uint64_t seq = 0;
  int64_t arg = 0;
  std::vector<uint8_t> payload;
};

// For messages: "barrier #3", "broadcast #2 (root 1)", "a hello".
std::string describe(Type type, uint64_t seq, int64_t arg);

constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;
constexpr uint64_t kMaxPayload = uint64_t(1) << 30;

void append_message(std::vector<uint8_t>& out, const Message& m);
void append_u64(std::vector<uint8_t>& out, uint64_t v);
uint64_t read_u64(const uint8_t* p);

// Takes one complete message off the front of `buffer` into `out`. Returns false when the
// buffer holds only part of one. A buffer that cannot be the start of a message (wrong magic,
// other version, absurd length) sets `*error` to why and returns false; checked as soon as
// enough bytes are there, so a stray connection is found out by its first bytes.
bool take_message(std::vector<uint8_t>& buffer, Message& out, std::string* error);

enum class Io { ok, would_block, closed, error };

// Appends whatever can be read now without waiting. ok: read something (maybe more is there).
Io read_some(int fd, std::vector<uint8_t>& buffer, int* err);
// Sends from the front of `outbox` what can be sent now without waiting, and erases it.
Io write_some(int fd, std::vector<uint8_t>& outbox, int* err);
// Waits (EINTR retried until the deadline) for `events` on `fd`; returns the revents or 0.
short wait_for(int fd, short events, const Deadline& deadline);

// Rank 0's socket: every IPv4 interface, `port` (0: the kernel picks a free one), SO_REUSEADDR,
// non-blocking. Throws kd::Error naming the port.
Socket listen_on(int port, int backlog);
int local_port(int fd);
// Accepts one pending connection (non-blocking); invalid when none is waiting.
Socket accept_one(int listen_fd);
// One attempt to connect to host:port before `deadline`; on failure an invalid socket and the
// reason in `*error` (name resolution, refused, timeout). Refuses a TCP self-connection (the
// kernel can pair a socket with itself when the port is free and in the ephemeral range).
Socket connect_once(const std::string& host, int port, const Deadline& deadline, std::string* error);
// "127.0.0.1:5000" for the other end of a connected socket.
std::string peer_name(int fd);
// Bytes as hex plus printable ASCII, for a message about a stray peer: "47 45 54 20 'GET '".
std::string show_bytes(const uint8_t* p, size_t n);

}  // namespace kd::wire
