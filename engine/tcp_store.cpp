#include "engine/tcp_store.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/tcp_wire.h"
#include "kernels/check.h"

namespace kd {

using wire::Deadline;
using wire::Io;
using wire::Message;
using wire::Socket;
using wire::Type;

namespace {

constexpr size_t kMaxStrays = 16;  // unidentified connections held at once during the rendezvous

// How much longer than the timeout the ranks other than 0 wait, so that rank 0's verdict, which
// names the missing ranks, reaches them before their own timeout fires.
double grace(double timeout) { return std::min(std::max(1.0, 0.2 * timeout), 30.0); }

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string text_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// One TCP connection and what has been read from it but not yet handled.
struct Conn {
  Socket sock;
  std::string from;  // the peer's address
  std::vector<uint8_t> in;
  std::deque<Message> queued;  // complete messages, oldest first
  bool closed = false;
  std::string why_closed;
  std::string bad_frame;  // set once the stream stopped being TcpStore messages
};

// Held for the whole of a collective (and set_timeout); see Impl::busy.
class Collective {
 public:
  Collective(std::atomic<bool>& busy, std::mutex& io) : busy_(busy) {
    busy_.store(true);
    lock_ = std::unique_lock<std::mutex>(io);
  }
  ~Collective() {
    lock_.unlock();
    busy_.store(false);
  }

 private:
  std::atomic<bool>& busy_;
  std::unique_lock<std::mutex> lock_;
};
}  // namespace

struct TcpStore::Impl {
  int rank, size;
  std::string host;
  int port;
  double timeout_s;
  uint64_t seq = 0;     // collectives so far
  std::string failure;  // the first error; the store is unusable once it is set
  std::mutex io;        // held by collectives; progress calls only try it
  // Set by a collective before it waits for `io`: the progress calls then leave `io` alone, so a
  // watchdog calling them in a loop cannot starve the collective (std::mutex is not fair).
  std::atomic<bool> busy{false};
  // rank 0
  std::vector<Conn> peers;  // by rank; [0] unused
  std::unique_ptr<std::atomic<uint64_t>[]> progress;
  // the other ranks
  Conn root;
  std::vector<uint8_t> outbox;  // not yet sent to rank 0
  std::atomic<uint64_t> pending_progress{0};
  std::atomic<bool> has_pending{false};

  Impl(int r, int n, std::string h, int p, double t) : rank(r), size(n), host(std::move(h)), port(p), timeout_s(t) {}
  ~Impl();

  std::string who() const {
    return "TcpStore rank " + std::to_string(rank) + " of " + std::to_string(size) + " (" + host + ":" +
           std::to_string(port) + ")";
  }
  std::string secs(double s) const { return detail::concat(s, " s"); }

  [[noreturn]] void fail(const std::string& what) {
    if (failure.empty()) failure = who() + ": " + what;
    if (rank == 0) {  // tell the others, best effort and without waiting
      std::vector<uint8_t> buf;
      wire::append_message(buf, Message{Type::abort, seq, 0, bytes_of(what)});
      for (Conn& c : peers) {
        if (!c.sock.valid() || c.closed) continue;
        std::vector<uint8_t> copy = buf;
        int err = 0;
        wire::write_some(c.sock.fd(), copy, &err);
      }
    }
    KD_FAIL(failure);
  }

  void check_usable() const { KD_CHECK(failure.empty(), "TcpStore unusable after an earlier error: ", failure); }

  // Reads what has arrived on `c` (rank `k`'s connection on rank 0) without waiting.
  void pump(Conn& c, int k) {
    if (c.closed || !c.bad_frame.empty() || !c.sock.valid()) return;
    int err = 0;
    const Io r = wire::read_some(c.sock.fd(), c.in, &err);
    if (r == Io::closed || r == Io::error) {
      c.closed = true;
      c.why_closed = r == Io::closed ? "connection closed" : std::strerror(err);
    }
    Message m;
    while (wire::take_message(c.in, m, &c.bad_frame)) {
      if (m.type == Type::progress && rank == 0 && k > 0)
        progress[size_t(k)].store(uint64_t(m.arg));
      else
        c.queued.push_back(std::move(m));
    }
  }

  void send_to_peer(int k, const Message& m, const Deadline& dl, const std::string& op) {
    std::vector<uint8_t> buf;
    wire::append_message(buf, m);
    Conn& c = peers[size_t(k)];
    while (!buf.empty()) {
      int err = 0;
      const Io r = wire::write_some(c.sock.fd(), buf, &err);
      if (r == Io::closed || r == Io::error)
        fail(op + ": rank " + std::to_string(k) + " disconnected (" + std::strerror(err) + ")");
      if (r == Io::would_block && wire::wait_for(c.sock.fd(), POLLOUT, dl) == 0)
        fail(op + ": could not send to rank " + std::to_string(k) + " within " + secs(timeout_s));
    }
  }

  void raise_abort_if_any(const std::string& op) {
    for (const Message& m : root.queued)
      if (m.type == Type::abort) fail(op + " failed on rank 0: " + text_of(m.payload));
  }

  // Sends the outbox to rank 0, reading meanwhile so that an abort from rank 0 is seen.
  void flush_outbox(const Deadline& dl, const std::string& op) {
    while (!outbox.empty()) {
      int err = 0;
      const Io r = wire::write_some(root.sock.fd(), outbox, &err);
      if (r == Io::closed || r == Io::error) {
        pump(root, 0);
        raise_abort_if_any(op);
        fail(op + ": rank 0 disconnected (" + std::strerror(err) + ")");
      }
      if (r != Io::would_block) continue;
      const short ev = wire::wait_for(root.sock.fd(), POLLIN | POLLOUT, dl);
      if (ev == 0) fail(op + ": could not send to rank 0 within " + secs(timeout_s + grace(timeout_s)));
      if (ev & POLLIN) {
        pump(root, 0);
        raise_abort_if_any(op);
        if (root.closed) fail(op + ": rank 0 disconnected (" + root.why_closed + ")");
      }
    }
  }

  // The next message from rank 0, which must be `expect` (an abort raises rank 0's error).
  Message await_root(Type expect, const Deadline& dl, const std::string& op, const std::string& late) {
    for (;;) {
      if (!root.queued.empty()) {
        Message m = std::move(root.queued.front());
        root.queued.pop_front();
        if (m.type == Type::abort) fail(op + " failed on rank 0: " + text_of(m.payload));
        if (m.type == expect && (m.seq == seq || expect == Type::welcome)) return m;
        if (m.type == Type::reject) fail(op + ": rank 0 rejected this rank: " + text_of(m.payload));
        fail(op + ": protocol error: rank 0 sent " + wire::describe(m.type, m.seq, m.arg));
      }
      if (!root.bad_frame.empty()) fail(op + ": " + host + ":" + std::to_string(port) + " sent " + root.bad_frame);
      if (root.closed) fail(op + ": rank 0 disconnected (" + root.why_closed + ")");
      if (dl.passed()) fail(op + ": no answer from rank 0 within " + secs(timeout_s + grace(timeout_s)) + late);
      wire::wait_for(root.sock.fd(), POLLIN, dl);
      pump(root, 0);
    }
  }

  void rendezvous_root();
  void rendezvous_member();
  std::vector<std::vector<uint8_t>> root_collect(Type kind, int root_rank, const std::vector<uint8_t>& mine);
  std::vector<uint8_t> exchange(Type kind, int root_rank, const std::vector<uint8_t>& mine);
};

TcpStore::Impl::~Impl() {
  // Read what the peers sent last: closing a socket with unread data resets the connection, and
  // a reset can destroy data still on its way to the peer.
  for (Conn& c : peers) {
    if (!c.sock.valid()) continue;
    int err = 0;
    for (int i = 0; i < 64 && wire::read_some(c.sock.fd(), c.in, &err) == Io::ok; ++i) c.in.clear();
  }
}

void TcpStore::Impl::rendezvous_root() {
  progress.reset(new std::atomic<uint64_t>[size_t(size)]);
  for (int k = 0; k < size; ++k) progress[size_t(k)].store(0);
  peers.resize(size_t(size));
  if (size == 1) return;  // nobody to wait for: no socket, so single runs never clash on a port
  Socket listener = wire::listen_on(port, 128);
  port = wire::local_port(listener.fd());
  std::vector<Conn> strays;  // connected, hello not read yet
  std::vector<std::string> rejected;
  int arrived = 0;
  const Deadline dl(timeout_s);
  const std::string op = "the rendezvous";
  while (arrived < size - 1) {
    for (int k = 1; k < size; ++k)
      if (peers[size_t(k)].closed)
        fail(op + ": rank " + std::to_string(k) + " (" + peers[size_t(k)].from +
             ") disconnected before the others arrived (" + peers[size_t(k)].why_closed + ")");
    if (dl.passed()) {
      std::vector<int> missing;
      for (int k = 1; k < size; ++k)
        if (!peers[size_t(k)].sock.valid()) missing.push_back(k);
      std::string also;
      for (size_t i = 0; i < rejected.size() && i < 4; ++i) also += (i ? "; " : "") + rejected[i];
      fail(op + " timed out after " + secs(timeout_s) + ": " + rank_list(missing) + " did not connect to port " +
           std::to_string(port) + (also.empty() ? "" : "; rejected connections: " + also));
    }
    std::vector<pollfd> fds{{listener.fd(), POLLIN, 0}};
    for (const Conn& s : strays) fds.push_back({s.sock.fd(), POLLIN, 0});
    for (int k = 1; k < size; ++k)
      if (peers[size_t(k)].sock.valid()) fds.push_back({peers[size_t(k)].sock.fd(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), dl.poll_ms()) < 0 && errno != EINTR)
      fail(op + ": poll: " + std::strerror(errno));
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == listener.fd()) {
        while (Socket s = wire::accept_one(listener.fd())) {
          Conn c;
          c.from = wire::peer_name(s.fd());
          c.sock = std::move(s);
          if (strays.size() < kMaxStrays)
            strays.push_back(std::move(c));
          else if (rejected.size() < kMaxStrays)
            rejected.push_back(c.from + ": too many connections without a hello");
        }
        continue;
      }
      for (int k = 1; k < size; ++k)
        if (peers[size_t(k)].sock.fd() == fds[i].fd) pump(peers[size_t(k)], k);
      for (Conn& s : strays)
        if (s.sock.fd() == fds[i].fd) pump(s, 0);
    }
    for (size_t i = strays.size(); i-- > 0;) {
      Conn& s = strays[i];
      std::string reason;
      if (!s.bad_frame.empty())
        reason = s.bad_frame;
      else if (s.queued.empty() && s.closed)
        reason = "closed without a hello (" + s.why_closed + ")";
      else if (s.queued.empty())
        continue;
      if (reason.empty()) {
        const Message& h = s.queued.front();
        const int64_t r = h.arg;
        const uint64_t n = h.payload.size() == 8 ? wire::read_u64(h.payload.data()) : 0;
        if (h.type != Type::hello || h.payload.size() != 8)
          reason = "sent " + wire::describe(h.type, h.seq, h.arg) + " instead of a hello";
        else if (n != uint64_t(size))
          reason = "a rank of a run of size " + std::to_string(n) + ", this run has size " + std::to_string(size);
        else if (r < 1 || r >= size)
          reason = "rank " + std::to_string(r) + " is not one of 1.." + std::to_string(size - 1);
        else if (peers[size_t(r)].sock.valid())
          reason = "rank " + std::to_string(r) + " is already connected from " + peers[size_t(r)].from;
        if (reason.empty()) {
          s.queued.pop_front();
          peers[size_t(r)] = std::move(s);
          ++arrived;
        } else if (!s.closed) {
          std::vector<uint8_t> buf;
          int err = 0;
          wire::append_message(buf, Message{Type::reject, 0, 0, bytes_of(reason)});
          wire::write_some(s.sock.fd(), buf, &err);
        }
      }
      if (!reason.empty() && rejected.size() < kMaxStrays) rejected.push_back(s.from + ": " + reason);
      strays.erase(strays.begin() + long(i));
    }
  }
  listener.reset();  // late or duplicate ranks now find the port closed
  const Deadline send_dl(timeout_s);
  for (int k = 1; k < size; ++k) send_to_peer(k, Message{Type::welcome, 0, 0, {}}, send_dl, op);
}

void TcpStore::Impl::rendezvous_member() {
  KD_CHECK(port > 0, who(), ": rank ", rank, " cannot find rank 0 on port 0: the port must be known in advance");
  const std::string op = "the rendezvous";
  const Deadline dl(timeout_s + grace(timeout_s));
  std::string last_error;
  double pause = 0.02;
  while (!(root.sock = wire::connect_once(host, port, dl, &last_error)).valid()) {
    if (dl.passed())
      fail(op + ": could not connect to rank 0 at " + host + ":" + std::to_string(port) + " within " +
           secs(timeout_s + grace(timeout_s)) + ": " + last_error);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(int(pause * 1000), dl.poll_ms())));
    pause = std::min(pause * 1.5, 0.5);
  }
  root.from = host + ":" + std::to_string(port);
  std::vector<uint8_t> size_bytes;
  wire::append_u64(size_bytes, uint64_t(size));
  wire::append_message(outbox, Message{Type::hello, 0, rank, size_bytes});
  flush_outbox(dl, op);
  await_root(Type::welcome, dl, op, " after connecting (still waiting for other ranks?)");
}

std::vector<std::vector<uint8_t>> TcpStore::Impl::root_collect(Type kind, int root_rank,
                                                               const std::vector<uint8_t>& mine) {
  const std::string op = wire::describe(kind, seq, root_rank);
  std::vector<std::optional<std::vector<uint8_t>>> got(static_cast<size_t>(size));
  got[0] = mine;
  int missing = size - 1;
  auto take = [&](int k) {
    Conn& c = peers[size_t(k)];
    if (got[size_t(k)] || c.queued.empty()) return;
    Message m = std::move(c.queued.front());
    c.queued.pop_front();
    if (m.type != kind || m.seq != seq || m.arg != root_rank)
      fail(op + ": rank " + std::to_string(k) + " called " + wire::describe(m.type, m.seq, m.arg) +
           " (every rank must call the same collectives in the same order)");
    got[size_t(k)] = std::move(m.payload);
    --missing;
  };
  const Deadline dl(timeout_s);
  for (;;) {
    for (int k = 1; k < size; ++k) take(k);
    if (missing == 0) break;
    std::vector<int> absent;
    for (int k = 1; k < size; ++k) {
      const Conn& c = peers[size_t(k)];
      if (got[size_t(k)]) continue;
      absent.push_back(k);
      if (!c.bad_frame.empty()) fail(op + ": rank " + std::to_string(k) + " sent " + c.bad_frame);
      if (c.closed) fail(op + ": rank " + std::to_string(k) + " disconnected (" + c.why_closed + ")");
    }
    if (dl.passed()) fail(op + " timed out after " + secs(timeout_s) + ": " + rank_list(absent) + " did not arrive");
    std::vector<pollfd> fds;
    std::vector<int> rank_of;
    for (int k = 1; k < size; ++k) {
      if (peers[size_t(k)].closed) continue;
      fds.push_back({peers[size_t(k)].sock.fd(), POLLIN, 0});
      rank_of.push_back(k);
    }
    if (::poll(fds.data(), fds.size(), dl.poll_ms()) < 0 && errno != EINTR)
      fail(op + ": poll: " + std::strerror(errno));
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents != 0) pump(peers[size_t(rank_of[i])], rank_of[i]);
  }
  std::vector<std::vector<uint8_t>> all(static_cast<size_t>(size));
  for (int k = 0; k < size; ++k) all[size_t(k)] = std::move(*got[size_t(k)]);
  std::vector<uint8_t> reply;
  if (kind == Type::broadcast) reply = all[size_t(root_rank)];
  if (kind == Type::all_gather) {
    wire::append_u64(reply, uint64_t(size));
    for (const auto& a : all) {
      wire::append_u64(reply, a.size());
      reply.insert(reply.end(), a.begin(), a.end());
    }
  }
  const Deadline send_dl(timeout_s);
  for (int k = 1; k < size; ++k)
    send_to_peer(k, Message{kind, seq, root_rank, k == root_rank ? std::vector<uint8_t>{} : reply}, send_dl, op);
  return all;
}

std::vector<uint8_t> TcpStore::Impl::exchange(Type kind, int root_rank, const std::vector<uint8_t>& mine) {
  const std::string op = wire::describe(kind, seq, root_rank);
  if (has_pending.exchange(false))
    wire::append_message(outbox, Message{Type::progress, 0, int64_t(pending_progress.load()), {}});
  wire::append_message(outbox, Message{kind, seq, root_rank, mine});
  const Deadline dl(timeout_s + grace(timeout_s));
  flush_outbox(dl, op);
  return await_root(kind, dl, op, " (rank 0 has not reached " + op + ", or waits for another rank)").payload;
}

TcpStore::TcpStore(int rank, int size, const std::string& host, int port, double timeout_s) {
  KD_CHECK(size >= 1 && rank >= 0 && rank < size, "TcpStore: rank ", rank, " of ", size, " is not a rank");
  KD_CHECK(port >= 0 && port <= 65535, "TcpStore: port ", port, " is not a TCP port");
  KD_CHECK(timeout_s > 0 && std::isfinite(timeout_s), "TcpStore: the timeout must be positive, got ", timeout_s);
  impl_ = std::make_unique<Impl>(rank, size, host, port, timeout_s);
  if (rank == 0)
    impl_->rendezvous_root();
  else
    impl_->rendezvous_member();
}

TcpStore::~TcpStore() = default;
TcpStore::TcpStore(TcpStore&&) noexcept = default;
TcpStore& TcpStore::operator=(TcpStore&&) noexcept = default;

TcpStore::Impl& TcpStore::impl() const {
  KD_CHECK(impl_, "TcpStore used after it was moved from");
  return *impl_;
}

int TcpStore::rank() const { return impl().rank; }
int TcpStore::size() const { return impl().size; }
int TcpStore::port() const { return impl().port; }
double TcpStore::timeout() const { return impl().timeout_s; }

void TcpStore::set_timeout(double seconds) {
  KD_CHECK(seconds > 0 && std::isfinite(seconds), impl().who(), ": the timeout must be positive, got ", seconds);
  Collective lock(impl().busy, impl().io);
  impl().timeout_s = seconds;
}

void TcpStore::broadcast(std::vector<uint8_t>& blob, int root) {
  Impl& s = impl();
  KD_CHECK(root >= 0 && root < s.size, s.who(), ": broadcast root ", root, " is not a rank");
  Collective lock(s.busy, s.io);
  s.check_usable();
  ++s.seq;
  if (s.size == 1) return;
  if (s.rank == 0) {
    auto all = s.root_collect(Type::broadcast, root, s.rank == root ? blob : std::vector<uint8_t>{});
    blob = std::move(all[size_t(root)]);
  } else {
    auto got = s.exchange(Type::broadcast, root, s.rank == root ? blob : std::vector<uint8_t>{});
    if (s.rank != root) blob = std::move(got);
  }
}

std::vector<std::vector<uint8_t>> TcpStore::all_gather(const std::vector<uint8_t>& mine) {
  Impl& s = impl();
  Collective lock(s.busy, s.io);
  s.check_usable();
  ++s.seq;
  if (s.size == 1) return {mine};
  if (s.rank == 0) return s.root_collect(Type::all_gather, 0, mine);
  const std::vector<uint8_t> reply = s.exchange(Type::all_gather, 0, mine);
  const std::string op = wire::describe(Type::all_gather, s.seq, 0);
  std::vector<std::vector<uint8_t>> all;
  size_t at = 8;
  if (reply.size() < 8 || wire::read_u64(reply.data()) != uint64_t(s.size))
    s.fail(op + ": rank 0's reply does not hold " + std::to_string(s.size) + " ranks");
  for (int k = 0; k < s.size; ++k) {
    if (reply.size() - at < 8 || reply.size() - at - 8 < wire::read_u64(&reply[at]))
      s.fail(op + ": rank 0's reply is cut short at rank " + std::to_string(k));
    const size_t n = size_t(wire::read_u64(&reply[at]));
    all.emplace_back(reply.begin() + long(at + 8), reply.begin() + long(at + 8 + n));
    at += 8 + n;
  }
  return all;
}

void TcpStore::barrier() {
  Impl& s = impl();
  Collective lock(s.busy, s.io);
  s.check_usable();
  ++s.seq;
  if (s.size == 1) return;
  if (s.rank == 0)
    s.root_collect(Type::barrier, 0, {});
  else
    s.exchange(Type::barrier, 0, {});
}

void TcpStore::post_progress(uint64_t value) {
  Impl& s = impl();
  if (s.rank == 0) {
    s.progress[0].store(value);
    return;
  }
  s.pending_progress.store(value);
  s.has_pending.store(true);
  if (s.busy.load()) return;  // a collective is on its way; it sends the value
  std::unique_lock<std::mutex> lock(s.io, std::try_to_lock);
  if (!lock.owns_lock() || !s.failure.empty()) return;
  if (s.outbox.empty() && s.has_pending.exchange(false))
    wire::append_message(s.outbox, Message{Type::progress, 0, int64_t(s.pending_progress.load()), {}});
  int err = 0;
  wire::write_some(s.root.sock.fd(), s.outbox, &err);  // a failure shows in the next collective
}

std::vector<uint64_t> TcpStore::last_progress() {
  Impl& s = impl();
  KD_CHECK(s.rank == 0, s.who(), ": last_progress() answers on rank 0 only, where the progress reports go");
  {
    std::unique_lock<std::mutex> lock(s.io, std::defer_lock);
    if (!s.busy.load() && lock.try_lock())  // else a collective is reading the same sockets
      for (int k = 1; k < s.size; ++k) s.pump(s.peers[size_t(k)], k);
  }
  std::vector<uint64_t> out(size_t(s.size));
  for (int k = 0; k < s.size; ++k) out[size_t(k)] = s.progress[size_t(k)].load();
  return out;
}

}  // namespace kd
