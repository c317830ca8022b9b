// detect_launch: each launcher's variables read from a fake environment, the priority between
// launchers, the MASTER_ADDR / MASTER_PORT defaults, Slurm's node and task lists, and for every
// bad value an error that names the variable and its value.
#include "engine/launch.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <map>

#include "tests/support/testing.h"

namespace kd {
namespace {

using test::error_of;
using Vars = std::map<std::string, std::string>;

LaunchInfo detect(const Vars& vars) {
  return detect_launch([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string error_for(const Vars& vars) {
  return error_of([&] { detect(vars); });
}

void expect_has(const std::string& msg, std::initializer_list<std::string> fragments) {
  for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "' in: " << msg;
}

void expect_launch(const LaunchInfo& got, const std::string& launcher, int rank, int size, int local_rank,
                   int local_size, const std::string& addr, int port) {
  EXPECT_EQ(got.launcher, launcher);
  EXPECT_EQ(got.rank, rank);
  EXPECT_EQ(got.size, size);
  EXPECT_EQ(got.local_rank, local_rank);
  EXPECT_EQ(got.local_size, local_size);
  EXPECT_EQ(got.master_addr, addr);
  EXPECT_EQ(got.master_port, port);
}

// What srun sets for task 6 of 8, four tasks on each of two nodes.
Vars srun_task6() {
  return {{"SLURM_STEP_ID", "0"},
          {"SLURM_PROCID", "6"},
          {"SLURM_STEP_NUM_TASKS", "8"},
          {"SLURM_NTASKS", "8"},
          {"SLURM_LOCALID", "2"},
          {"SLURM_NODEID", "1"},
          {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_STEP_NODELIST", "gpu[03-04]"},
          {"SLURM_JOB_NODELIST", "gpu[01-04]"}};
}

Vars with(Vars base, const Vars& more) {
  for (const auto& [k, v] : more) base[k] = v;
  return base;
}

TEST(Launch, NoLauncherIsASingleProcess) {
  expect_launch(detect({}), "single", 0, 1, 0, 1, "127.0.0.1", 29500);
  // an sbatch script: Slurm variables but no srun step
  expect_launch(detect({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_NODELIST", "n[1-2]"}}), "single", 0,
                1, 0, 1, "127.0.0.1", 29500);
  // LOCAL_RANK alone does not make a multi-process run; empty values count as unset
  expect_launch(detect({{"LOCAL_RANK", "0"}, {"RANK", ""}, {"MASTER_ADDR", "host9"}, {"MASTER_PORT", "4000"}}),
                "single", 0, 1, 0, 1, "host9", 4000);
}

TEST(Launch, OpenMpi) {
  const Vars ompi = {{"OMPI_COMM_WORLD_RANK", "5"},
                     {"OMPI_COMM_WORLD_SIZE", "8"},
                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                     {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                     {"MASTER_ADDR", "node0"}};
  expect_launch(detect(ompi), "mpi", 5, 8, 1, 4, "node0", 29500);
  // one node: the loopback default is fine
  expect_launch(detect({{"OMPI_COMM_WORLD_RANK", "1"},
                        {"OMPI_COMM_WORLD_SIZE", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}),
                "mpi", 1, 2, 1, 2, "127.0.0.1", 29500);
  // Open MPI wins over every other launcher's variables
  expect_launch(detect(with(srun_task6(), with(ompi, {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"PMIX_RANK", "0"}}))), "mpi",
                5, 8, 1, 4, "node0", 29500);
}

TEST(Launch, SeveralNodesWithoutMasterAddrIsAnError) {
  expect_has(error_for({{"OMPI_COMM_WORLD_RANK", "5"},
                        {"OMPI_COMM_WORLD_SIZE", "8"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}),
             {"MASTER_ADDR is not set", "OMPI_COMM_WORLD_LOCAL_SIZE=4", "127.0.0.1", "span several nodes"});
}

TEST(Launch, PmixTakesTheSizeAndNodeFromTheSrunStep) {
  // srun --mpi=pmix: PMIX_RANK plus srun's own variables
  expect_launch(detect(with(srun_task6(), {{"PMIX_RANK", "6"}})), "mpi", 6, 8, 2, 4, "gpu03", 29500);
  expect_launch(detect({{"PMIX_RANK", "2"},
                        {"OMPI_COMM_WORLD_SIZE", "4"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}),
                "mpi", 2, 4, 2, 4, "127.0.0.1", 29500);
  expect_has(error_for({{"PMIX_RANK", "2"}}), {"PMIX_RANK=2", "number of processes", "OMPI_COMM_WORLD_SIZE"});
}

TEST(Launch, MpichHydra) {
  expect_launch(detect({{"PMI_RANK", "3"},
                        {"PMI_SIZE", "4"},
                        {"MPI_LOCALRANKID", "3"},
                        {"MPI_LOCALNRANKS", "4"},
                        {"MASTER_PORT", "6000"}}),
                "mpi", 3, 4, 3, 4, "127.0.0.1", 6000);
  expect_has(error_for({{"PMI_RANK", "3"}}), {"PMI_RANK=3", "PMI_SIZE is not"});
  // srun --mpi=pmi2 sets only PMI_RANK / PMI_SIZE: the node comes from the step
  expect_launch(detect(with(srun_task6(), {{"PMI_RANK", "6"}, {"PMI_SIZE", "8"}})), "mpi", 6, 8, 2, 4, "gpu03", 29500);
  // Hydra's proxies started by srun: the step is theirs (one task per node), not the ranks'
  const Vars proxies = {
      {"PMI_RANK", "5"},     {"PMI_SIZE", "8"},      {"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "1"},
      {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "1"},  {"SLURM_STEP_TASKS_PER_NODE", "1(x2)"}};
  expect_has(error_for(proxies), {"MPI_LOCALRANKID and MPI_LOCALNRANKS", "PMI_RANK=5"});
}

TEST(Launch, TorchrunStyle) {
  const Vars env = {{"RANK", "3"},
                    {"WORLD_SIZE", "8"},
                    {"LOCAL_RANK", "1"},
                    {"LOCAL_WORLD_SIZE", "2"},
                    {"MASTER_ADDR", "10.1.2.3"},
                    {"MASTER_PORT", "29400"}};
  expect_launch(detect(env), "env", 3, 8, 1, 2, "10.1.2.3", 29400);
  // srun torchrun ...: the Slurm variables describe torchrun's agent, RANK the process
  expect_launch(detect(with(srun_task6(), env)), "env", 3, 8, 1, 2, "10.1.2.3", 29400);
  expect_has(error_for({{"RANK", "1"}}), {"RANK=1", "WORLD_SIZE is not"});
  expect_has(error_for({{"WORLD_SIZE", "2"}}), {"WORLD_SIZE=2", "RANK is not"});
  expect_has(error_for({{"RANK", "1"}, {"WORLD_SIZE", "2"}}), {"LOCAL_RANK and LOCAL_WORLD_SIZE"});
  expect_has(error_for({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}}), {"LOCAL_WORLD_SIZE"});
  expect_launch(detect({{"RANK", "0"}, {"WORLD_SIZE", "1"}}), "env", 0, 1, 0, 1, "127.0.0.1", 29500);
}

TEST(Launch, Slurm) {
  expect_launch(detect(srun_task6()), "slurm", 6, 8, 2, 4, "gpu03", 29500);
  expect_launch(detect(with(srun_task6(), {{"MASTER_ADDR", "head"}})), "slurm", 6, 8, 2, 4, "head", 29500);
  // the older SLURM_STEPID; the job's node list when the step's is missing; uneven nodes
  Vars v = srun_task6();
  v.erase("SLURM_STEP_ID");
  v.erase("SLURM_STEP_NODELIST");
  v["SLURM_STEPID"] = "3";
  v["SLURM_STEP_TASKS_PER_NODE"] = "3,2(x2),1";
  v["SLURM_NODEID"] = "2";
  v["SLURM_LOCALID"] = "1";
  expect_launch(detect(v), "slurm", 6, 8, 1, 2, "gpu01", 29500);
  v["SLURM_NODEID"] = "3";
  v["SLURM_LOCALID"] = "0";
  expect_launch(detect(v), "slurm", 6, 8, 0, 1, "gpu01", 29500);
  // the job-level tasks per node, then SLURM_NTASKS_PER_NODE
  v = srun_task6();
  v.erase("SLURM_STEP_TASKS_PER_NODE");
  v["SLURM_TASKS_PER_NODE"] = "4,4";
  expect_launch(detect(v), "slurm", 6, 8, 2, 4, "gpu03", 29500);
  v.erase("SLURM_TASKS_PER_NODE");
  v["SLURM_NTASKS_PER_NODE"] = "4";
  expect_launch(detect(v), "slurm", 6, 8, 2, 4, "gpu03", 29500);
  // size from SLURM_NTASKS when the step's count is missing
  v.erase("SLURM_STEP_NUM_TASKS");
  expect_launch(detect(v), "slurm", 6, 8, 2, 4, "gpu03", 29500);
}

TEST(Launch, SlurmReservedStepsAreNotSrunSteps) {
  for (const char* step : {"4294967291", "4294967292", "4294967290", "batch", "extern", "interactive"})
    EXPECT_EQ(detect(with(srun_task6(), {{"SLURM_STEP_ID", step}})).launcher, "single") << step;
}

TEST(Launch, SlurmErrorsNameTheVariables) {
  Vars v = srun_task6();
  v.erase("SLURM_STEP_NUM_TASKS");
  v.erase("SLURM_NTASKS");
  expect_has(error_for(v), {"SLURM_STEP_ID=0", "SLURM_PROCID=6", "SLURM_NTASKS"});
  v = srun_task6();
  v.erase("SLURM_LOCALID");
  expect_has(error_for(v), {"SLURM_LOCALID", "SLURM_PROCID=6"});
  expect_has(error_for(with(srun_task6(), {{"SLURM_NODEID", "2"}})),
             {"SLURM_NODEID=2", "SLURM_STEP_TASKS_PER_NODE=\"4(x2)\"", "2 nodes"});
  expect_has(error_for(with(srun_task6(), {{"SLURM_STEP_TASKS_PER_NODE", "4(x2"}})),
             {"SLURM_STEP_TASKS_PER_NODE=\"4(x2\"", "N(xM)"});
  expect_has(error_for(with(srun_task6(), {{"SLURM_STEP_TASKS_PER_NODE", "4,,4"}})),
             {"SLURM_STEP_TASKS_PER_NODE=\"4,,4\""});
  expect_has(error_for(with(srun_task6(), {{"SLURM_STEP_NODELIST", "gpu[03-"}})),
             {"SLURM_STEP_NODELIST=\"gpu[03-\"", "unclosed"});
  expect_has(error_for(with(srun_task6(), {{"SLURM_STEP_ID", "step"}})), {"SLURM_STEP_ID=\"step\"", "not an integer"});
  expect_has(error_for(with(srun_task6(), {{"SLURM_LOCALID", "4"}})), {"SLURM_LOCALID=4", "outside [0, 4)"});
}

TEST(Launch, NodeListFirstHost) {
  EXPECT_EQ(first_host_of_nodelist("node7"), "node7");
  EXPECT_EQ(first_host_of_nodelist("a1,b2"), "a1");
  EXPECT_EQ(first_host_of_nodelist("gpu[01-04,07]"), "gpu01");
  EXPECT_EQ(first_host_of_nodelist("gpu[07,01-04]"), "gpu07");
  EXPECT_EQ(first_host_of_nodelist("gpu[3]"), "gpu3");
  EXPECT_EQ(first_host_of_nodelist("r[1-2]-n[3,5],x"), "r1-n3");
  EXPECT_EQ(first_host_of_nodelist("n[001-004]-ib"), "n001-ib");
  EXPECT_EQ(first_host_of_nodelist("10.0.0.5,10.0.0.6"), "10.0.0.5");
  expect_has(error_of([] { first_host_of_nodelist("gpu[01-04", "SLURM_NODELIST"); }),
             {"SLURM_NODELIST=\"gpu[01-04\"", "unclosed '['"});
  expect_has(error_of([] { first_host_of_nodelist("gpu01]"); }), {"unbalanced ']'"});
  expect_has(error_of([] { first_host_of_nodelist("gpu[[1]]"); }), {"unbalanced '['"});
  expect_has(error_of([] { first_host_of_nodelist("gpu[a-c]"); }), {"does not start with a number"});
  expect_has(error_of([] { first_host_of_nodelist(",x"); }), {"names no host"});
}

TEST(Launch, BadValuesNameTheVariableAndValue) {
  const Vars ok = {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}};
  struct Case {
    Vars change;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {{{"RANK", "one"}}, {"RANK=\"one\"", "not an integer"}},
      {{{"WORLD_SIZE", "2x"}}, {"WORLD_SIZE=\"2x\"", "not an integer"}},
      {{{"WORLD_SIZE", " 2"}}, {"WORLD_SIZE=\" 2\"", "not an integer"}},
      {{{"LOCAL_RANK", "-"}}, {"LOCAL_RANK=\"-\"", "not an integer"}},
      {{{"LOCAL_WORLD_SIZE", "1.5"}}, {"LOCAL_WORLD_SIZE=\"1.5\"", "not an integer"}},
      {{{"RANK", "99999999999"}}, {"RANK=\"99999999999\"", "out of range"}},
      {{{"RANK", "99999999999999999999999"}}, {"RANK=\"99999999999999999999999\"", "out of range"}},
      {{{"RANK", "2"}}, {"RANK=2", "outside [0, 2)", "WORLD_SIZE=2"}},
      {{{"RANK", "-1"}}, {"RANK=-1", "outside [0, 2)"}},
      {{{"WORLD_SIZE", "0"}, {"RANK", "0"}}, {"WORLD_SIZE=0", "at least 1"}},
      {{{"LOCAL_RANK", "2"}}, {"LOCAL_RANK=2", "outside [0, 2)", "LOCAL_WORLD_SIZE=2"}},
      {{{"LOCAL_WORLD_SIZE", "0"}}, {"LOCAL_WORLD_SIZE=0", "at least 1"}},
      {{{"LOCAL_WORLD_SIZE", "4"}, {"LOCAL_RANK", "3"}}, {"LOCAL_WORLD_SIZE=4", "larger than WORLD_SIZE=2"}},
      {{{"MASTER_PORT", "http"}}, {"MASTER_PORT=\"http\"", "not an integer"}},
      {{{"MASTER_PORT", "70000"}}, {"MASTER_PORT=\"70000\"", "out of range [1, 65535]"}},
      {{{"MASTER_PORT", "0"}}, {"MASTER_PORT=\"0\"", "out of range [1, 65535]"}},
      {{{"OMPI_COMM_WORLD_RANK", "x"}}, {"OMPI_COMM_WORLD_RANK=\"x\"", "not an integer"}},
      {{{"OMPI_COMM_WORLD_RANK", "0"}}, {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE is not"}},
      {{{"PMI_RANK", "0"}, {"PMI_SIZE", "two"}}, {"PMI_SIZE=\"two\"", "not an integer"}},
  };
  for (const Case& c : cases) {
    const std::string msg = error_for(with(ok, c.change));
    SCOPED_TRACE(msg);
    for (const std::string& f : c.fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "'";
  }
}

TEST(Launch, DescribeNamesEverything) {
  const LaunchInfo info = detect(srun_task6());
  EXPECT_EQ(info.describe(), "rank 6 of 8 (local 2 of 4), launched by slurm, rendezvous at gpu03:29500");
}

TEST(Launch, RealEnvironmentIsReadByDefault) {
  // The test binary itself: whatever launched it, detect_launch() reads the real environment and
  // gives a consistent answer.
  const LaunchInfo info = detect_launch();
  EXPECT_GE(info.rank, 0);
  EXPECT_LT(info.rank, info.size);
  EXPECT_FALSE(info.launcher.empty());
  EXPECT_FALSE(info.master_addr.empty());
}

// Which GPU a rank drives: its local rank where every rank sees the node's GPUs, 0 where a
// launcher bound one GPU to each rank, and an error naming the counts otherwise.
TEST(Launch, TheGpuOfALocalRankFollowsWhatTheProcessSees) {
  EXPECT_EQ(gpu_for_local_rank(0, 1, 1), 0);
  EXPECT_EQ(gpu_for_local_rank(3, 8, 8), 3);
  EXPECT_EQ(gpu_for_local_rank(3, 4, 8), 3) << "fewer ranks than GPUs";
  EXPECT_EQ(gpu_for_local_rank(5, 8, 1), 0) << "--gpus-per-task=1: each rank sees its own as device 0";
  const std::string e = test::error_of([] { gpu_for_local_rank(5, 8, 4); });
  EXPECT_NE(e.find("local rank 5 of 8 sees 4 CUDA devices"), std::string::npos) << e;
  EXPECT_NE(e.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << e;
  EXPECT_NE(test::error_of([] { gpu_for_local_rank(0, 1, 0); }).find("no CUDA device"), std::string::npos);
}

}  // namespace
}  // namespace kd
