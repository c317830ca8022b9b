#include "engine/tcp_wire.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "kernels/check.h"

namespace kd::wire {

namespace {
constexpr uint8_t kMagic[4] = {'k', 'd', 'T', 'S'};

void put(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(uint8_t(v >> (8 * i)));
}

uint64_t get(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

void set_options(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small messages, latency matters
}

std::string address_text(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}
}  // namespace

Deadline::Deadline(double seconds)
    : at_(std::chrono::steady_clock::now() +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds))) {}

bool Deadline::passed() const { return std::chrono::steady_clock::now() >= at_; }

int Deadline::poll_ms() const {
  const auto left = at_ - std::chrono::steady_clock::now();
  if (left <= left.zero()) return 0;
  const double ms = std::ceil(std::chrono::duration<double, std::milli>(left).count());
  return ms > 1e9 ? 1000000000 : int(ms);
}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::reset() {
  if (fd_ >= 0) ::close(fd_);  // never retried on EINTR: Linux has closed the descriptor anyway
  fd_ = -1;
}

std::string describe(Type type, uint64_t seq, int64_t arg) {
  const char* collective = nullptr;
  switch (type) {
    case Type::barrier:
      collective = "barrier";
      break;
    case Type::broadcast:
      collective = "broadcast";
      break;
    case Type::all_gather:
      collective = "all_gather";
      break;
    case Type::hello:
      return "a hello";
    case Type::welcome:
      return "a welcome";
    case Type::reject:
      return "a reject";
    case Type::abort:
      return "an abort";
    case Type::progress:
      return "a progress report";
  }
  if (collective == nullptr) return "a message of unknown type " + std::to_string(int(type));
  const std::string name = std::string(collective) + " #" + std::to_string(seq);
  return type == Type::broadcast ? name + " (root " + std::to_string(arg) + ")" : name;
}

void append_u64(std::vector<uint8_t>& out, uint64_t v) { put(out, v, 8); }
uint64_t read_u64(const uint8_t* p) { return get(p, 8); }

void append_message(std::vector<uint8_t>& out, const Message& m) {
  out.insert(out.end(), kMagic, kMagic + 4);
  put(out, kVersion, 2);
  put(out, uint16_t(m.type), 2);
  put(out, m.seq, 8);
  put(out, uint64_t(m.arg), 8);
  put(out, m.payload.size(), 8);
  out.insert(out.end(), m.payload.begin(), m.payload.end());
}

bool take_message(std::vector<uint8_t>& buffer, Message& out, std::string* error) {
  if (buffer.empty()) return false;
  const size_t magic_seen = std::min<size_t>(buffer.size(), 4);
  if (std::memcmp(buffer.data(), kMagic, magic_seen) != 0) {
    *error =
        "bad magic " + show_bytes(buffer.data(), std::min<size_t>(buffer.size(), 8)) + " (not a kd TcpStore message)";
    return false;
  }
  if (buffer.size() < kHeaderBytes) return false;
  const uint64_t version = get(&buffer[4], 2), length = get(&buffer[24], 8);
  if (version != kVersion) {
    *error = "TcpStore protocol version " + std::to_string(version) + ", this build speaks version " +
             std::to_string(kVersion);
    return false;
  }
  if (length > kMaxPayload) {
    *error = "a message of " + std::to_string(length) + " bytes (the limit is " + std::to_string(kMaxPayload) + ")";
    return false;
  }
  if (buffer.size() < kHeaderBytes + length) return false;
  out.type = Type(get(&buffer[6], 2));
  out.seq = get(&buffer[8], 8);
  out.arg = int64_t(get(&buffer[16], 8));
  out.payload.assign(buffer.begin() + kHeaderBytes, buffer.begin() + kHeaderBytes + long(length));
  buffer.erase(buffer.begin(), buffer.begin() + kHeaderBytes + long(length));
  return true;
}

Io read_some(int fd, std::vector<uint8_t>& buffer, int* err) {
  uint8_t chunk[65536];
  bool got = false;
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      buffer.insert(buffer.end(), chunk, chunk + n);
      got = true;
      if (size_t(n) < sizeof chunk) return Io::ok;
      continue;
    }
    if (n == 0) return got ? Io::ok : Io::closed;  // the close shows again on the next read
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return got ? Io::ok : Io::would_block;
    *err = errno;
    return got ? Io::ok : Io::error;
  }
}

Io write_some(int fd, std::vector<uint8_t>& outbox, int* err) {
  size_t sent = 0;
  Io result = Io::ok;
  while (sent < outbox.size()) {
    const ssize_t n = ::send(fd, outbox.data() + sent, outbox.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      sent += size_t(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      result = Io::would_block;
    } else {
      *err = errno;
      result = (errno == EPIPE || errno == ECONNRESET) ? Io::closed : Io::error;
    }
    break;
  }
  outbox.erase(outbox.begin(), outbox.begin() + long(sent));
  return result;
}

short wait_for(int fd, short events, const Deadline& deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, deadline.poll_ms());
    if (n > 0) return p.revents;
    if (n == 0 || errno != EINTR || deadline.passed()) return 0;
  }
}

Socket listen_on(int port, int backlog) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  KD_CHECK(s.valid(), "TcpStore: cannot create a socket: ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(uint16_t(port));
  KD_CHECK(::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "TcpStore: rank 0 cannot listen on port ",
           port, " (0.0.0.0:", port, "): ", std::strerror(errno),
           errno == EADDRINUSE ? " -- another program (or an earlier run) holds it; choose another MASTER_PORT" : "");
  KD_CHECK(::listen(s.fd(), backlog) == 0, "TcpStore: listen on port ", port, ": ", std::strerror(errno));
  return s;
}

int local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

Socket accept_one(int listen_fd) {
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      set_options(fd);
      return Socket(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return Socket();  // EAGAIN: none waiting; anything else (EMFILE...) is retried on the next poll
  }
}

Socket connect_once(const std::string& host, int port, const Deadline& deadline, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    *error = "cannot resolve '" + host + "': " + ::gai_strerror(rc);
    return Socket();
  }
  *error = "no IPv4 address for '" + host + "'";
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!s.valid()) {
      *error = std::string("cannot create a socket: ") + std::strerror(errno);
      continue;
    }
    int err = 0;
    if (::connect(s.fd(), ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS || err == EINTR) {  // an interrupted connect goes on in the background
        const short ev = wait_for(s.fd(), POLLOUT, deadline);
        socklen_t len = sizeof err;
        if (ev == 0)
          err = ETIMEDOUT;
        else
          ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    if (err == 0) {
      sockaddr_in self{}, peer{};
      socklen_t ls = sizeof self, lp = sizeof peer;
      ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&self), &ls);
      ::getpeername(s.fd(), reinterpret_cast<sockaddr*>(&peer), &lp);
      if (self.sin_port == peer.sin_port && self.sin_addr.s_addr == peer.sin_addr.s_addr) {
        *error = "connected to itself (nothing listens there yet)";
        continue;
      }
      set_options(s.fd());
      ::freeaddrinfo(found);
      return s;
    }
    *error = address_text(*reinterpret_cast<const sockaddr_in*>(ai->ai_addr)) + ": " + std::strerror(err);
  }
  ::freeaddrinfo(found);
  return Socket();
}

std::string peer_name(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "(unknown peer)";
  return address_text(a);
}

std::string show_bytes(const uint8_t* p, size_t n) {
  static const char* hex = "0123456789abcdef";
  std::string h, text;
  for (size_t i = 0; i < n; ++i) {
    if (i) h += ' ';
    h += hex[p[i] >> 4];
    h += hex[p[i] & 15];
    text += (p[i] >= 32 && p[i] < 127) ? char(p[i]) : '.';
  }
  return h + " '" + text + "'";
}

}  // namespace kd::wire
