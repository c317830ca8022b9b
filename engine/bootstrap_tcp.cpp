// The TCP bootstrap: a TcpStore (rank 0 at MASTER_ADDR:MASTER_PORT) behind the Bootstrap interface.
#include "engine/bootstrap.h"
#include "engine/launch.h"
#include "engine/tcp_store.h"

namespace kd {

namespace {

class TcpBootstrap final : public Bootstrap {
 public:
  TcpBootstrap(const LaunchInfo& launch, double timeout_s) : store_(launch, timeout_s) {}
  int rank() const override { return store_.rank(); }
  int size() const override { return store_.size(); }
  const char* kind() const override { return "tcp"; }
  void broadcast(std::vector<uint8_t>& blob, int root) override { store_.broadcast(blob, root); }
  std::vector<std::vector<uint8_t>> all_gather(const std::vector<uint8_t>& mine) override {
    return store_.all_gather(mine);
  }
  void barrier() override { store_.barrier(); }

 private:
  TcpStore store_;
};

}  // namespace

std::unique_ptr<Bootstrap> make_tcp_bootstrap(const LaunchInfo& launch, double timeout_s) {
  return std::make_unique<TcpBootstrap>(launch, timeout_s);
}

}  // namespace kd
