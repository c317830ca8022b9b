// TcpStore: the rendezvous of a multi-process run over plain TCP, before any communicator exists.
//
// Why: NCCL starts only once every rank holds the same 128-byte ncclUniqueId, which rank 0
// creates. Under mpirun it could travel over MPI, but the GPU machine has no MPI, and
// torchrun-style or srun launches have none either. So rank 0 hands it out over a TCP socket at
// MASTER_ADDR:MASTER_PORT (engine/launch.h), and the same channel carries the start-up agreement
// check (kd version, config hash, checkpoint step, parameter checksum: all_gather, then compare)
// and, optionally, each rank's progress for hang detection.
//
// Protocol: a star. Rank 0 listens on MASTER_PORT on every IPv4 interface (SO_REUSEADDR) and
// accepts one connection from each other rank; the others connect to MASTER_ADDR:MASTER_PORT,
// retrying until the timeout, so rank 0 may start after them. Each connection opens with a hello
// (rank, size) that rank 0 checks: wrong size, a rank out of range or already connected gets a
// reject with the reason; a connection whose first bytes are not a kd TcpStore message (another
// program, a port scanner) is closed and listed in rank 0's error should the rendezvous fail.
// When every rank is there rank 0 sends a welcome, so the constructor is itself a barrier.
// Messages are length-prefixed with a 32-byte header: magic "kdTS", protocol version, type,
// sequence number, argument (engine/tcp_wire.h).
//
// Every collective goes through rank 0: each rank sends its request (kind, sequence number,
// root, its bytes), rank 0 waits for all of them, checks that they agree, and sends each rank
// the result. So rank 0 always knows who has not arrived. When an operation fails there --
// a rank missing at the timeout, a rank that disconnected, ranks calling different operations --
// rank 0 sends the other ranks an abort with its error, which they raise as their own: every
// rank's error names the operation, its number and the rank(s) at fault. Ranks other than 0 wait
// a little longer than the timeout (a fifth more, at least 1 s, at most 30 s) so that rank 0's
// verdict reaches them first; when rank 0 itself is late or gone they report that. After an
// error the store is unusable: further calls throw the first error again.
//
// Collectives must be called by every rank in the same order. Each has a timeout (the
// constructor's `timeout_s`, changeable with set_timeout), and nothing blocks without one.
// Threads: collectives from one thread at a time; post_progress and last_progress may be called
// from another thread (a watchdog) at any time and never wait for a collective to finish.
// Sizes: a message carries at most 1 GiB; this is for ids and checksums, not for tensors.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/launch.h"

namespace kd {

class TcpStore {
 public:
  // Connects the `size` ranks; returns when all are there. Rank 0 listens on `port` (0: a free
  // port the kernel picks, see port(); useful only when size == 1 or in tests) and `host` is
  // where the others find it (a name or an IPv4 address). Throws kd::Error naming host:port and
  // the missing ranks when not every rank arrived within `timeout_s`.
  TcpStore(int rank, int size, const std::string& host, int port, double timeout_s);
  TcpStore(const LaunchInfo& launch, double timeout_s)
      : TcpStore(launch.rank, launch.size, launch.master_addr, launch.master_port, timeout_s) {}
  ~TcpStore();  // closes the sockets
  TcpStore(TcpStore&&) noexcept;
  TcpStore& operator=(TcpStore&&) noexcept;
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  int rank() const;
  int size() const;
  int port() const;  // rank 0: the port it listened on; others: the port they connected to
  double timeout() const;
  void set_timeout(double seconds);  // for the collectives that follow; > 0

  // Rank `root`'s `blob` to every rank: on the others `blob` is replaced (any length, may be
  // empty). E.g. the ncclUniqueId from rank 0.
  void broadcast(std::vector<uint8_t>& blob, int root = 0);
  // Every rank's bytes, indexed by rank, on every rank; lengths may differ between ranks.
  std::vector<std::vector<uint8_t>> all_gather(const std::vector<uint8_t>& mine);
  void barrier();

  // Hang detection. post_progress sends this rank's progress counter (e.g. the step) to rank 0
  // without waiting: when the socket cannot take it now, the newest value goes with the next
  // post or collective. On rank 0, last_progress() gives the latest value heard from each rank
  // (0 before the first), reading what has arrived; it throws on other ranks. A rank whose value
  // stops moving while the others' advance is the one that hangs.
  void post_progress(uint64_t seq);
  std::vector<uint64_t> last_progress();

 private:
  struct Impl;
  Impl& impl() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
