#include "engine/launch.h"

#include <cctype>
#include <climits>
#include <initializer_list>
#include <optional>
#include <vector>

#include "kernels/check.h"

namespace kd {
namespace {

constexpr int kDefaultPort = 29500;
constexpr const char* kLoopback = "127.0.0.1";
// Slurm's reserved step ids (pending, batch script, extern, interactive step) lie at the top of
// the 32-bit range, 0xfffffffa..0xfffffffd; a process in one of them was not started by srun.
constexpr long long kFirstReservedStep = 0xfffffff0LL;

long long parse_integer(const std::string& name, const std::string& value, long long lo, long long hi) {
  const bool negative = !value.empty() && value[0] == '-';
  bool digits = value.size() > size_t(negative);
  bool overflow = false;
  long long v = 0;
  for (size_t i = negative; i < value.size() && digits; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(value[i])))
      digits = false;
    else if (v > (LLONG_MAX - 9) / 10)
      overflow = true;
    else
      v = v * 10 + (value[i] - '0');
  }
  KD_CHECK(digits, "launch: environment variable ", name, "=\"", value, "\" is not an integer");
  if (negative) v = -v;
  KD_CHECK(!overflow && v >= lo && v <= hi, "launch: environment variable ", name, "=\"", value, "\" is out of range [",
           lo, ", ", hi, "]");
  return v;
}

// A named integer read from the environment, for messages: "PMI_RANK=3".
struct Var {
  std::string name;
  int value = 0;
  std::string str() const { return name + "=" + std::to_string(value); }
};

class Env {
 public:
  explicit Env(const std::function<const char*(const char*)>& get) : get_(get) {}
  std::optional<std::string> text(const std::string& name) const {
    const char* v = get_(name.c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  }
  bool has(const std::string& name) const { return text(name).has_value(); }
  std::optional<Var> integer(const std::string& name) const {
    const auto v = text(name);
    if (!v) return std::nullopt;
    return Var{name, int(parse_integer(name, *v, INT_MIN, INT_MAX))};
  }
  // The first of `names` that is set.
  std::optional<Var> first(std::initializer_list<const char*> names) const {
    for (const char* n : names)
      if (auto v = integer(n)) return v;
    return std::nullopt;
  }

 private:
  const std::function<const char*(const char*)>& get_;
};

// "2(x3),1" (Slurm's tasks per node: 2 on each of three nodes, then 1): the count of node `node`.
int tasks_on_node(const std::string& name, const std::string& spec, const Var& node) {
  const std::string where = name + "=\"" + spec + "\"";
  long long first_node = 0;
  size_t i = 0;
  while (i < spec.size()) {
    size_t end = spec.find(',', i);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(i, end - i);
    const size_t paren = item.find("(x");
    const std::string count = item.substr(0, paren);
    long long repeat = 1;
    if (paren != std::string::npos) {
      KD_CHECK(item.back() == ')', "launch: cannot read ", where, ": '", item, "' is neither N nor N(xM)");
      repeat = parse_integer(name, item.substr(paren + 2, item.size() - paren - 3), 1, INT_MAX);
    }
    KD_CHECK(!count.empty(), "launch: cannot read ", where, ": '", item, "' is neither N nor N(xM)");
    const int tasks = int(parse_integer(name, count, 0, INT_MAX));
    if (node.value >= first_node && node.value < first_node + repeat) return tasks;
    first_node += repeat;
    i = end + 1;
  }
  KD_FAIL("launch: ", node.str(), " is not among the ", first_node, " nodes of ", where);
}

// What srun tells the processes of a step it launched; nullopt outside such a step.
struct SlurmStep {
  Var procid, ntasks;
  std::optional<Var> localid, tasks_here;
};

std::optional<SlurmStep> slurm_step(const Env& env) {
  std::string id_name = "SLURM_STEP_ID";
  auto id = env.text(id_name);
  if (!id) id = env.text(id_name = "SLURM_STEPID");
  if (!id || !env.has("SLURM_PROCID")) return std::nullopt;
  if (*id == "batch" || *id == "extern" || *id == "interactive" || *id == "TBD") return std::nullopt;
  if (parse_integer(id_name, *id, 0, LLONG_MAX) >= kFirstReservedStep) return std::nullopt;
  SlurmStep s;
  s.procid = *env.integer("SLURM_PROCID");
  const auto ntasks = env.first({"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"});
  KD_CHECK(ntasks, "launch: in a Slurm step (", id_name, "=", *id, ", ", s.procid.str(),
           ") but none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS, SLURM_NPROCS is set");
  s.ntasks = *ntasks;
  s.localid = env.integer("SLURM_LOCALID");
  if (const auto node = env.integer("SLURM_NODEID")) {
    for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
      if (const auto spec = env.text(name)) {
        s.tasks_here = Var{name, tasks_on_node(name, *spec, *node)};
        break;
      }
    }
  }
  if (!s.tasks_here) s.tasks_here = env.integer("SLURM_NTASKS_PER_NODE");
  return s;
}

void check_in_range(const Var& index, const Var& count) {
  KD_CHECK(count.value >= 1, "launch: ", count.str(), ": a count of processes must be at least 1");
  KD_CHECK(index.value >= 0 && index.value < count.value, "launch: ", index.str(), " is outside [0, ", count.value,
           ") given by ", count.str());
}

}  // namespace

int gpu_for_local_rank(int local_rank, int local_size, int visible_devices) {
  KD_CHECK(visible_devices >= 1, "no CUDA device is visible to local rank ", local_rank);
  if (local_rank < visible_devices) return local_rank;
  if (visible_devices == 1) return 0;  // one GPU bound to each rank
  KD_FAIL("local rank ", local_rank, " of ", local_size, " sees ", visible_devices,
          " CUDA devices: a node runs one rank per visible GPU, or each rank sees exactly its own "
          "(CUDA_VISIBLE_DEVICES = '", std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "",
          "')");
}

std::string first_host_of_nodelist(const std::string& nodelist, const std::string& what) {
  const std::string where = what + "=\"" + nodelist + "\"";
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == ',' && depth == 0) break;
    if (c == '[') ++depth;
    if (c == ']') --depth;
    KD_CHECK(depth == 0 || depth == 1, "launch: cannot read the Slurm node list ", where, ": unbalanced '", c,
             "' at offset ", end);
  }
  KD_CHECK(depth == 0, "launch: cannot read the Slurm node list ", where, ": unclosed '['");
  std::string host;
  for (size_t i = 0; i < end;) {
    if (nodelist[i] != '[') {
      host += nodelist[i++];
      continue;
    }
    const size_t close = nodelist.find(']', i);
    size_t digits = i + 1;
    while (digits < close && std::isdigit(static_cast<unsigned char>(nodelist[digits]))) ++digits;
    KD_CHECK(digits > i + 1, "launch: cannot read the Slurm node list ", where, ": the range at offset ", i,
             " does not start with a number");
    host += nodelist.substr(i + 1, digits - i - 1);
    i = close + 1;
  }
  KD_CHECK(!host.empty(), "launch: the Slurm node list ", where, " names no host");
  return host;
}

std::string LaunchInfo::describe() const {
  return "rank " + std::to_string(rank) + " of " + std::to_string(size) + " (local " + std::to_string(local_rank) +
         " of " + std::to_string(local_size) + "), launched by " + launcher + ", rendezvous at " + master_addr + ":" +
         std::to_string(master_port);
}

LaunchInfo detect_launch(const std::function<const char*(const char*)>& getenv) {
  const Env env(getenv);
  std::optional<std::optional<SlurmStep>> step_cache;  // read only when needed
  auto step = [&]() -> const std::optional<SlurmStep>& {
    if (!step_cache) step_cache = slurm_step(env);
    return *step_cache;
  };

  LaunchInfo info;
  Var rank{"", 0}, size{"", 1};
  std::optional<Var> local_rank, local_size;
  std::string local_names;  // the launcher's own local variables, for the error when they are missing
  if (const auto r = env.integer("OMPI_COMM_WORLD_RANK")) {
    info.launcher = "mpi";
    rank = *r;
    const auto s = env.integer("OMPI_COMM_WORLD_SIZE");
    KD_CHECK(s, "launch: ", rank.str(), " is set (Open MPI) but OMPI_COMM_WORLD_SIZE is not");
    size = *s;
    local_rank = env.integer("OMPI_COMM_WORLD_LOCAL_RANK");
    local_size = env.integer("OMPI_COMM_WORLD_LOCAL_SIZE");
    local_names = "OMPI_COMM_WORLD_LOCAL_RANK and OMPI_COMM_WORLD_LOCAL_SIZE";
  } else if (const auto r = env.integer("PMIX_RANK")) {
    info.launcher = "mpi";
    rank = *r;
    if (const auto s = env.integer("OMPI_COMM_WORLD_SIZE"))
      size = *s;
    else if (step())
      size = step()->ntasks;
    else
      KD_FAIL("launch: ", rank.str(),
              " is set (PMIx) but the number of processes is not: neither "
              "OMPI_COMM_WORLD_SIZE nor a Slurm step's SLURM_STEP_NUM_TASKS / SLURM_NTASKS is set");
    local_rank = env.integer("OMPI_COMM_WORLD_LOCAL_RANK");
    local_size = env.integer("OMPI_COMM_WORLD_LOCAL_SIZE");
    local_names = "OMPI_COMM_WORLD_LOCAL_RANK and OMPI_COMM_WORLD_LOCAL_SIZE";
  } else if (const auto r = env.integer("PMI_RANK")) {
    info.launcher = "mpi";
    rank = *r;
    const auto s = env.integer("PMI_SIZE");
    KD_CHECK(s, "launch: ", rank.str(), " is set (MPICH/Hydra) but PMI_SIZE is not");
    size = *s;
    local_rank = env.integer("MPI_LOCALRANKID");
    local_size = env.integer("MPI_LOCALNRANKS");
    local_names = "MPI_LOCALRANKID and MPI_LOCALNRANKS";
  } else if (env.has("RANK") || env.has("WORLD_SIZE")) {
    info.launcher = "env";
    const auto r = env.integer("RANK");
    const auto s = env.integer("WORLD_SIZE");
    KD_CHECK(r && s, "launch: ", r ? r->str() : s->str(), " is set (torchrun-style launch) but ",
             r ? "WORLD_SIZE" : "RANK", " is not");
    rank = *r;
    size = *s;
    local_rank = env.integer("LOCAL_RANK");
    local_size = env.integer("LOCAL_WORLD_SIZE");
    local_names = "LOCAL_RANK and LOCAL_WORLD_SIZE";
  } else if (step()) {
    info.launcher = "slurm";
    rank = step()->procid;
    size = step()->ntasks;
    local_rank = step()->localid;
    local_size = step()->tasks_here;
    local_names =
        "SLURM_LOCALID and one of SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE (with SLURM_NODEID) "
        "or SLURM_NTASKS_PER_NODE";
  } else {
    info.launcher = "single";
  }
  check_in_range(rank, size);

  // srun started this process itself (not a daemon of another launcher that srun started).
  auto srun_direct = [&] {
    return info.launcher != "single" && step() && step()->procid.value == rank.value &&
           step()->ntasks.value == size.value;
  };
  if (!(local_rank && local_size) && srun_direct() && step()->localid && step()->tasks_here) {
    local_rank = step()->localid;
    local_size = step()->tasks_here;
  }
  if (!(local_rank && local_size)) {
    KD_CHECK(size.value == 1, "launch: cannot tell this process's place on its node (", info.launcher, ", ", rank.str(),
             ", ", size.str(), "): set ", local_names);
    local_rank = Var{"local rank", 0};
    local_size = Var{"local size", 1};
  }
  check_in_range(*local_rank, *local_size);
  KD_CHECK(local_size->value <= size.value, "launch: ", local_size->str(), " is larger than ", size.str());
  info.rank = rank.value;
  info.size = size.value;
  info.local_rank = local_rank->value;
  info.local_size = local_size->value;

  info.master_port = kDefaultPort;
  if (const auto port = env.text("MASTER_PORT")) info.master_port = int(parse_integer("MASTER_PORT", *port, 1, 65535));
  if (const auto addr = env.text("MASTER_ADDR")) {
    info.master_addr = *addr;
  } else {
    if (srun_direct()) {
      for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
        if (const auto list = env.text(name)) {
          info.master_addr = first_host_of_nodelist(*list, name);
          break;
        }
      }
    }
    if (info.master_addr.empty()) {
      KD_CHECK(info.local_size == info.size, "launch: the ", info.size, " processes span several nodes (",
               local_size->str(), " on this one) but MASTER_ADDR is not set, and the default ", kLoopback,
               " reaches rank 0 only from its own node: set MASTER_ADDR to rank 0's host (mpirun: -x MASTER_ADDR=...)");
      info.master_addr = kLoopback;
    }
  }
  return info;
}

}  // namespace kd
