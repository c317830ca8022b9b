// TcpStore: ranks as threads of this process on 127.0.0.1. Collectives with 1-4 ranks; rank 0
// starting after the others; a rank that never arrives, disconnects or calls another collective
// (every rank's error names it, within the timeout); stray connections and non-store servers
// rejected with a clear error; progress reports for hang detection.
#include "engine/tcp_store.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <future>
#include <initializer_list>
#include <thread>

#include "tests/support/testing.h"

namespace kd {
namespace {

using test::error_of;
using Bytes = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;

void expect_has(const std::string& msg, std::initializer_list<std::string> fragments) {
  for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "' in: " << msg;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A TCP socket of the test itself (a stray client, a fake server, a port holder).
struct RawSocket {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ~RawSocket() { ::close(fd); }
  // Binds every interface on `port` (0: any) and listens; returns the port.
  int listen_on(int port = 0) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd, 8), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }
  bool connect_to(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
    sockaddr_in self{};
    socklen_t len = sizeof self;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len);
    return self.sin_port != a.sin_port;  // not a TCP self-connection to a port nobody listens on
  }
  void send_text(const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), ssize_t(s.size())); }
  // True when the other end closes the connection within `seconds`.
  bool closed_within(double seconds) {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    char buf[256];
    while (Clock::now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return true;  // FIN or reset
    }
    return false;
  }
};

// A port that was free a moment ago (bound to 0, read back, released).
int free_port() {
  RawSocket s;
  return s.listen_on(0);
}

// Runs body(rank) on one thread per rank; returns each rank's kd::Error message, "" for none.
std::vector<std::string> on_threads(int n, const std::function<void(int)>& body) {
  std::vector<std::string> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      const std::string e = error_of([&] { body(r); });
      errors[size_t(r)] = e == "(no error)" ? "" : e;
    });
  for (auto& t : threads) t.join();
  return errors;
}

Bytes bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(TcpStore, CollectivesWithOneToFourRanks) {
  for (int n = 1; n <= 4; ++n) {
    SCOPED_TRACE("ranks: " + std::to_string(n));
    const int port = free_port();
    const auto errors = on_threads(n, [&](int rank) {
      TcpStore store(rank, n, "127.0.0.1", port, 10);
      EXPECT_EQ(store.rank(), rank);
      EXPECT_EQ(store.size(), n);
      for (int round = 0; round < 5; ++round) {
        // the NCCL unique id: 128 bytes from rank 0; the others start with something else
        Bytes id(128);
        for (size_t i = 0; i < id.size(); ++i) id[i] = uint8_t(rank == 0 ? i * 7 + round : 0xee);
        store.broadcast(id);
        ASSERT_EQ(id.size(), 128u);
        for (size_t i = 0; i < id.size(); ++i) ASSERT_EQ(id[i], uint8_t(i * 7 + round)) << i;
        // from the last rank, a different length than the receivers hold
        Bytes text = bytes(rank == n - 1 ? "hello from rank " + std::to_string(rank) : "x");
        store.broadcast(text, n - 1);
        EXPECT_EQ(text, bytes("hello from rank " + std::to_string(n - 1)));
        // lengths differ per rank, rank 0's is empty
        const auto all = store.all_gather(Bytes(size_t(rank * (round + 1)), uint8_t(rank + 10 * round)));
        ASSERT_EQ(all.size(), size_t(n));
        for (int k = 0; k < n; ++k) EXPECT_EQ(all[size_t(k)], Bytes(size_t(k * (round + 1)), uint8_t(k + 10 * round)));
        store.barrier();
      }
    });
    for (int r = 0; r < n; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  }
}

TEST(TcpStore, LargeAllGatherOutgrowsTheSocketBuffers) {
  const int port = free_port();
  const int n = 3;
  const size_t each = 3 << 20;
  const auto errors = on_threads(n, [&](int rank) {
    TcpStore store(rank, n, "127.0.0.1", port, 20);
    Bytes mine(each);
    for (size_t i = 0; i < each; ++i) mine[i] = uint8_t(i * 31 + size_t(rank));
    const auto all = store.all_gather(mine);
    for (int k = 0; k < n; ++k) {
      ASSERT_EQ(all[size_t(k)].size(), each);
      for (size_t i = 0; i < each; i += 4093) ASSERT_EQ(all[size_t(k)][i], uint8_t(i * 31 + size_t(k)));
    }
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(TcpStore, SingleRankOpensNoSocket) {
  RawSocket holder;
  const int taken = holder.listen_on(0);  // a second single-process run must not clash on it
  TcpStore store(0, 1, "127.0.0.1", taken, 1);
  Bytes id = bytes("id");
  store.broadcast(id);
  EXPECT_EQ(id, bytes("id"));
  EXPECT_EQ(store.all_gather(bytes("me")), std::vector<Bytes>{bytes("me")});
  store.barrier();
  store.post_progress(7);
  EXPECT_EQ(store.last_progress(), std::vector<uint64_t>{7});
}

TEST(TcpStore, RankZeroStartingLastStillConnects) {
  const int port = free_port();
  const auto errors = on_threads(4, [&](int rank) {
    if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(400));
    TcpStore store(rank, 4, "localhost", port, 10);  // a host name, resolved with getaddrinfo
    const auto all = store.all_gather(bytes(std::to_string(rank)));
    EXPECT_EQ(all[3], bytes("3"));
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(TcpStore, RankMissingAtTheRendezvousIsNamedOnEveryRank) {
  const int port = free_port();
  std::vector<double> took(2);
  const auto start = Clock::now();
  const auto errors = on_threads(2, [&](int rank) {  // rank 2 of 3 never starts
    const auto t0 = Clock::now();
    try {
      TcpStore store(rank, 3, "127.0.0.1", port, 0.5);
    } catch (...) {
      took[size_t(rank)] = seconds_since(t0);
      throw;
    }
  });
  expect_has(errors[0], {"rank 0 of 3", "rendezvous timed out after 0.5 s", "rank 2 did not connect"});
  expect_has(errors[1], {"rank 1 of 3", "failed on rank 0", "rank 2 did not connect"});
  EXPECT_LT(took[0], 1.0);
  EXPECT_LT(took[1], 1.5);  // rank 0's verdict arrives before rank 1's own deadline (0.5 + 1 s)
  EXPECT_LT(seconds_since(start), 2.0);
}

TEST(TcpStore, RankMissingAtACollectiveIsNamedOnEveryRank) {
  const int port = free_port();
  std::promise<void> others_done;
  std::shared_future<void> done = others_done.get_future().share();
  std::atomic<int> finished{0};
  std::vector<double> took(3);
  const auto errors = on_threads(3, [&](int rank) {
    TcpStore store(rank, 3, "127.0.0.1", port, 10);
    store.barrier();
    store.set_timeout(0.5);
    if (rank == 2) {  // stays connected but never calls the second barrier
      done.wait_for(std::chrono::seconds(10));
      return;
    }
    const auto t0 = Clock::now();
    const std::string e = error_of([&] { store.barrier(); });
    took[size_t(rank)] = seconds_since(t0);
    if (++finished == 2) others_done.set_value();
    KD_CHECK(e == "(no error)", e);
  });
  expect_has(errors[0], {"rank 0 of 3", "barrier #2 timed out after 0.5 s", "rank 2 did not arrive"});
  expect_has(errors[1], {"rank 1 of 3", "barrier #2 failed on rank 0", "rank 2 did not arrive"});
  EXPECT_EQ(errors[2], "");
  EXPECT_LT(took[0], 1.0);
  EXPECT_LT(took[1], 1.5);
}

TEST(TcpStore, MissingRankZeroIsReportedByTheOthers) {
  const int port = free_port();
  std::promise<void> gave_up;
  std::shared_future<void> done = gave_up.get_future().share();
  const auto errors = on_threads(2, [&](int rank) {
    TcpStore store(rank, 2, "127.0.0.1", port, 10);
    store.set_timeout(0.3);
    if (rank == 0) {
      done.wait_for(std::chrono::seconds(10));
      return;
    }
    const auto t0 = Clock::now();
    const std::string e = error_of([&] { store.all_gather(bytes("x")); });
    EXPECT_LT(seconds_since(t0), 2.0);
    gave_up.set_value();
    KD_CHECK(e == "(no error)", e);
  });
  EXPECT_EQ(errors[0], "");
  expect_has(errors[1], {"rank 1 of 2", "all_gather #1", "no answer from rank 0", "has not reached"});
}

TEST(TcpStore, DisconnectDuringACollectiveNamesTheRank) {
  const int port = free_port();
  const auto errors = on_threads(3, [&](int rank) {
    std::optional<TcpStore> store;
    store.emplace(rank, 3, "127.0.0.1", port, 10);
    store->barrier();
    if (rank == 2) {
      store.reset();  // the process died
      return;
    }
    store->all_gather(bytes("x"));
  });
  expect_has(errors[0], {"rank 0 of 3", "all_gather #2", "rank 2 disconnected"});
  expect_has(errors[1], {"rank 1 of 3", "all_gather #2 failed on rank 0", "rank 2 disconnected"});
  EXPECT_EQ(errors[2], "");
}

TEST(TcpStore, RankZeroDisconnectingIsNamed) {
  const int port = free_port();
  const auto errors = on_threads(3, [&](int rank) {
    std::optional<TcpStore> store;
    store.emplace(rank, 3, "127.0.0.1", port, 10);
    store->barrier();
    if (rank == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    store->barrier();
  });
  EXPECT_EQ(errors[0], "");
  expect_has(errors[1], {"rank 1 of 3", "barrier #2", "rank 0 disconnected"});
  expect_has(errors[2], {"rank 2 of 3", "barrier #2", "rank 0 disconnected"});
}

TEST(TcpStore, DifferentCollectivesOnDifferentRanksAreAnError) {
  const int port = free_port();
  const auto errors = on_threads(3, [&](int rank) {
    TcpStore store(rank, 3, "127.0.0.1", port, 5);
    if (rank == 1)
      store.barrier();
    else
      store.all_gather(bytes("x"));
  });
  for (const auto& e : errors) expect_has(e, {"all_gather #1", "rank 1 called barrier #1", "same order"});
  // a broadcast whose root differs between ranks
  const int port2 = free_port();
  const auto roots = on_threads(2, [&](int rank) {
    TcpStore store(rank, 2, "127.0.0.1", port2, 5);
    Bytes b = bytes("b");
    store.broadcast(b, rank);
  });
  for (const auto& e : roots) expect_has(e, {"broadcast #1 (root 0)", "rank 1 called broadcast #1 (root 1)"});
}

TEST(TcpStore, ErrorsAreStickyAndUseAfterMoveIsCaught) {
  const int port = free_port();
  const auto errors = on_threads(2, [&](int rank) {
    TcpStore store(rank, 2, "127.0.0.1", port, 5);
    const std::string first = error_of([&] { rank == 0 ? store.barrier() : (void)store.all_gather({}); });
    expect_has(first, {"rank 1 called all_gather #1"});
    expect_has(error_of([&] { store.barrier(); }), {"unusable after an earlier error", "rank 1 called all_gather #1"});
    TcpStore moved = std::move(store);
    EXPECT_EQ(moved.rank(), rank);
    expect_has(error_of([&] { store.barrier(); }), {"moved from"});
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(TcpStore, StrayConnectionIsRejectedAndTheRunGoesOn) {
  const int port = free_port();
  bool stray_closed = false;
  const auto errors = on_threads(2, [&](int rank) {
    if (rank == 1) {
      RawSocket stray;
      const auto until = Clock::now() + std::chrono::seconds(3);
      while (!stray.connect_to(port) && Clock::now() < until) {
        ::close(stray.fd);
        stray.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      stray.send_text("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      stray_closed = stray.closed_within(3);
    }
    TcpStore store(rank, 2, "127.0.0.1", port, 5);
    Bytes id = bytes(rank == 0 ? "id" : "");
    store.broadcast(id);
    EXPECT_EQ(id, bytes("id"));
  });
  EXPECT_TRUE(stray_closed);
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(TcpStore, RejectedConnectionsAreListedWhenTheRendezvousFails) {
  const int port = free_port();
  const auto errors = on_threads(2, [&](int rank) {
    if (rank == 0) {
      TcpStore store(0, 2, "127.0.0.1", port, 0.6);
      return;
    }
    RawSocket stray;
    const auto until = Clock::now() + std::chrono::seconds(3);
    while (!stray.connect_to(port) && Clock::now() < until) {
      ::close(stray.fd);
      stray.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stray.send_text("SSH-2.0-OpenSSH\r\n");
    stray.closed_within(2);
  });
  expect_has(errors[0], {"rank 1 did not connect", "rejected connections", "127.0.0.1:", "bad magic", "53 53 48 2d",
                         "'SSH-", "not a kd TcpStore"});
}

TEST(TcpStore, AServerThatIsNotAStoreIsNamed) {
  RawSocket server;
  const int port = server.listen_on(0);
  std::thread fake([&] {
    const int c = ::accept(server.fd, nullptr, nullptr);
    const std::string answer = "HTTP/1.1 400 Bad Request\r\n\r\n";
    ::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::close(c);
  });
  expect_has(error_of([&] { TcpStore(1, 2, "127.0.0.1", port, 2); }),
             {"rank 1 of 2", "127.0.0.1:" + std::to_string(port), "bad magic", "'HTTP", "not a kd TcpStore"});
  fake.join();
}

TEST(TcpStore, NobodyListeningIsNamedWithTheAddress) {
  const int port = free_port();
  const auto t0 = Clock::now();
  expect_has(error_of([&] { TcpStore(1, 2, "127.0.0.1", port, 0.3); }),
             {"could not connect to rank 0 at 127.0.0.1:" + std::to_string(port), "refused"});
  EXPECT_LT(seconds_since(t0), 2.5);
  expect_has(error_of([&] { TcpStore(1, 2, "no-such-host.invalid", port, 0.2); }),
             {"no-such-host.invalid", "cannot resolve"});
}

TEST(TcpStore, WrongSizeAndDuplicateRanksAreRejected) {
  const int port = free_port();
  // 0: rank 0; 1 and 2: both claim rank 1; 4: a rank of a run of size 4 on the same port;
  // 3: rank 2, started once both intruders were refused (so the port is still open for them)
  std::promise<void> refused;
  std::shared_future<void> rank2_may_start = refused.get_future().share();
  std::atomic<int> refusals{0};
  auto one_refused = [&] {
    if (++refusals == 2) refused.set_value();
  };
  const auto errors = on_threads(5, [&](int who) {
    if (who == 4) {
      const std::string e = error_of([&] { TcpStore(3, 4, "127.0.0.1", port, 5); });
      one_refused();
      expect_has(e, {"rejected this rank", "a run of size 4, this run has size 3"});
      return;
    }
    if (who == 3) rank2_may_start.wait_for(std::chrono::seconds(10));
    const int rank = who == 0 ? 0 : who == 3 ? 2 : 1;
    try {
      TcpStore store(rank, 3, "127.0.0.1", port, 5);
      store.barrier();
    } catch (const Error&) {
      if (rank == 1) one_refused();
      throw;
    }
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[3], "");
  EXPECT_EQ(errors[4], "");
  EXPECT_NE(errors[1].empty(), errors[2].empty()) << errors[1] << " | " << errors[2];
  expect_has(errors[1] + errors[2], {"rank 0 rejected this rank", "rank 1 is already connected from 127.0.0.1:"});
}

TEST(TcpStore, PortInUseIsNamed) {
  RawSocket holder;
  const int port = holder.listen_on(0);
  expect_has(error_of([&] { TcpStore(0, 2, "127.0.0.1", port, 1); }),
             {"rank 0 cannot listen on port " + std::to_string(port), "MASTER_PORT"});
}

TEST(TcpStore, ProgressReachesRankZeroWithoutDisturbingCollectives) {
  const int port = free_port();
  const auto errors = on_threads(3, [&](int rank) {
    TcpStore store(rank, 3, "127.0.0.1", port, 10);
    if (rank != 0) {
      expect_has(error_of([&] { store.last_progress(); }), {"rank 0 only"});
      for (uint64_t i = 1; i <= 20000; ++i) store.post_progress(i * 10 + uint64_t(rank));  // never blocks
    }
    store.barrier();  // progress messages interleave with the collective's
    if (rank == 0) {
      store.post_progress(5);
      std::vector<uint64_t> seen;
      const auto until = Clock::now() + std::chrono::seconds(5);
      while ((seen = store.last_progress()) != std::vector<uint64_t>{5, 200001, 200002} && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      EXPECT_EQ(seen, (std::vector<uint64_t>{5, 200001, 200002}));
    }
    // a watchdog reading progress while the main thread runs collectives
    std::atomic<bool> stop{false};
    std::thread watchdog([&] {
      do {  // at least once, even when the collectives finish before this thread runs
        if (rank == 0)
          store.last_progress();
        else
          store.post_progress(7);
      } while (!stop);
    });
    const std::string failed = error_of([&] {
      for (int i = 0; i < 50; ++i) EXPECT_EQ(store.all_gather(Bytes(size_t(i), uint8_t(rank))).size(), 3u);
    });
    stop = true;
    watchdog.join();
    KD_CHECK(failed == "(no error)", failed);
    store.barrier();
    if (rank == 0) {
      const auto until = Clock::now() + std::chrono::seconds(5);
      std::vector<uint64_t> seen;
      while ((seen = store.last_progress()) != std::vector<uint64_t>{5, 7, 7} && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      EXPECT_EQ(seen, (std::vector<uint64_t>{5, 7, 7}));
    }
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(TcpStore, ConstructionChecksItsArguments) {
  expect_has(error_of([] { TcpStore(2, 2, "127.0.0.1", 1, 1); }), {"rank 2 of 2 is not a rank"});
  expect_has(error_of([] { TcpStore(0, 1, "127.0.0.1", 70000, 1); }), {"port 70000"});
  expect_has(error_of([] { TcpStore(0, 1, "127.0.0.1", 1, 0); }), {"timeout must be positive"});
  expect_has(error_of([] { TcpStore(1, 2, "127.0.0.1", 0, 1); }), {"port 0", "known in advance"});
  TcpStore one(LaunchInfo{}, 1);
  EXPECT_EQ(one.size(), 1);
  expect_has(error_of([&] {
               Bytes b;
               one.broadcast(b, 1);
             }),
             {"broadcast root 1 is not a rank"});
  expect_has(error_of([&] { one.set_timeout(-1); }), {"timeout must be positive"});
}

}  // namespace
}  // namespace kd
