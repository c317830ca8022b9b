#include "engine/comm.h"

#include <cstring>

namespace kd {

std::string Communicator::describe() const {
  return std::string(transport()) + ": rank " + std::to_string(rank_) + " of " + std::to_string(size_);
}

size_t comm_element_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f64:
    case DType::i64:
      return 8;
    default:
      KD_FAIL("collectives carry f32, f64, i32 or i64, not ", dtype_name(dtype));
  }
}

namespace {

// One rank: reductions and broadcasts leave the data as it is; all_gather copies.
class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator() : Communicator(0, 1) {}
  const char* transport() const override { return "local"; }
  bool accepts(Device) const override { return true; }
  CommTicket all_reduce(void*, int64_t, DType dtype, ReduceOp, Context&) override {
    comm_element_size(dtype);
    return CommTicket{0};
  }
  CommTicket broadcast(void*, int64_t, DType dtype, int root, Context&) override {
    comm_element_size(dtype);
    KD_CHECK(root == 0, "broadcast from rank ", root, " in a world of 1");
    return CommTicket{0};
  }
  CommTicket all_gather(const void* send, void* recv, int64_t count, DType dtype, Context& ctx) override {
    const size_t bytes = size_t(count) * comm_element_size(dtype);
    if (send != recv && bytes > 0) copy_bytes(recv, ctx.device(), send, ctx.device(), bytes, &ctx);
    return CommTicket{0};
  }
  void wait(CommTicket, Context&) override {}
  void wait_all(Context&) override {}
  void all_reduce_host(double*, int64_t, ReduceOp) override {}
  std::vector<std::string> all_gather_host(const std::string& mine) override { return {mine}; }
  void barrier() override {}
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace kd
