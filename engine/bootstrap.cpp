#include "engine/bootstrap.h"

#include "engine/comm.h"

namespace kd {

namespace {

class LocalBootstrap final : public Bootstrap {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* kind() const override { return "local"; }
  void broadcast(std::vector<uint8_t>&, int root) override {
    KD_CHECK(root == 0, "bootstrap broadcast from rank ", root, " in a world of 1");
  }
  std::vector<std::vector<uint8_t>> all_gather(const std::vector<uint8_t>& mine) override { return {mine}; }
  void barrier() override {}
};

// Over a communicator's host plane (all_gather_host): the MPI launch path.
class CommBootstrap final : public Bootstrap {
 public:
  explicit CommBootstrap(std::unique_ptr<Communicator> comm) : owned_(std::move(comm)), comm_(*owned_) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  const char* kind() const override { return comm_.transport(); }
  void broadcast(std::vector<uint8_t>& blob, int root) override {
    KD_CHECK(root >= 0 && root < size(), "bootstrap broadcast from rank ", root, " in a world of ", size());
    const auto all = comm_.all_gather_host(rank() == root ? std::string(blob.begin(), blob.end()) : std::string());
    blob.assign(all[size_t(root)].begin(), all[size_t(root)].end());
  }
  std::vector<std::vector<uint8_t>> all_gather(const std::vector<uint8_t>& mine) override {
    std::vector<std::vector<uint8_t>> out;
    for (const std::string& s : comm_.all_gather_host(std::string(mine.begin(), mine.end())))
      out.emplace_back(s.begin(), s.end());
    return out;
  }
  void barrier() override { comm_.barrier(); }

 private:
  std::unique_ptr<Communicator> owned_;
  Communicator& comm_;
};

}  // namespace

std::unique_ptr<Bootstrap> make_local_bootstrap() { return std::make_unique<LocalBootstrap>(); }
std::unique_ptr<Bootstrap> make_comm_bootstrap(std::unique_ptr<Communicator> comm) {
  KD_CHECK(comm != nullptr, "bootstrap over no communicator");
  return std::make_unique<CommBootstrap>(std::move(comm));
}

}  // namespace kd
