#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "kernels/check.h"

namespace kd {

namespace {

// Byte-at-a-time table of the reflected Castagnoli polynomial.
const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

uint32_t masked_crc32c(const void* data, size_t bytes) {
  const uint32_t crc = crc32c(data, bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

// Protobuf wire format: a field key is (field number << 3 | wire type); varints are 7 bits per
// byte, low group first, the high bit set on all but the last byte.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(char(0x80 | (v & 0x7f)));
  out.push_back(char(v));
}
void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t(field) << 3) | type); }
template <typename T>
void put_little_endian(std::string& out, T v) {  // x86 and ARM hosts are little-endian
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}
void put_bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event fields (tensorflow/core/util/event.proto) and the messages inside.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5, kEventSessionLog = 7;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
constexpr uint32_t kSessionLogStatus = 1, kSessionLogStart = 1;

std::string event_header(int64_t step) {
  const double wall_time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string e;
  put_key(e, kEventWallTime, kFixed64);
  put_little_endian(e, wall_time);
  put_key(e, kEventStep, kVarint);
  put_varint(e, uint64_t(step));  // int64: negative steps would take 10 bytes; kd has none
  return e;
}

// The timestamp of an event file name, events.out.tfevents.<T>...; -1 when it has none.
long long event_file_time(const std::string& name) {
  static const std::string prefix = "events.out.tfevents.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const char* digits = name.c_str() + prefix.size();
  char* end = nullptr;
  const long long t = std::strtoll(digits, &end, 10);
  return end == digits ? -1 : t;
}

void add_scalars(const nlohmann::ordered_json& value, const std::string& tag, TaggedScalars& out) {
  if (value.is_number()) {
    out.emplace_back(tag, value.get<double>());
  } else if (value.is_object()) {
    for (const auto& [key, v] : value.items()) add_scalars(v, tag + "/" + key, out);
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) add_scalars(value[i], tag + "/" + std::to_string(i), out);
  }
}

}  // namespace

uint32_t crc32c(const void* data, size_t bytes) {
  const auto& table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t crc = ~0u;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool is_event_file_name(const std::string& file_name) { return file_name.find("tfevents") != std::string::npos; }

ScalarRecord scalars_of_record(const std::string& json_object) {
  // ordered_json keeps the record's field order, so the tags come in the order metrics.jsonl has.
  const auto record = nlohmann::ordered_json::parse(json_object);
  KD_CHECK(record.is_object() && record.contains("step") && record["step"].is_number_integer(),
           "a metrics record needs an integer \"step\": ", json_object);
  ScalarRecord r;
  r.step = record["step"].get<int64_t>();
  const bool eval = record.contains("eval");
  for (const auto& [key, value] : record.items()) {
    if (key == "step") continue;
    add_scalars(value, eval && key == "eval" ? "eval" : (eval ? "eval/" : "train/") + key, r.scalars);
  }
  return r;
}

EventFileWriter::EventFileWriter(const std::string& dir) {
  namespace fs = std::filesystem;
  long long unix_time =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // A resume within the same second as the killed run's file (or on a host whose name sorts
  // first) would sort before it: take the next second instead.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    unix_time = std::max(unix_time, event_file_time(entry.path().filename().string()) + 1);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = (fs::path(dir) /
           ("events.out.tfevents." + std::to_string(unix_time) + "." + host + "." + std::to_string(::getpid()) + ".kd"))
              .string();
  file_.open(path_, std::ios::binary | std::ios::trunc);
  KD_CHECK(file_.good(), "cannot open the TensorBoard event file ", path_, " for writing");
  std::string e = event_header(0);
  put_bytes_field(e, kEventFileVersion, "brain.Event:2");
  write_event(e);
}

void EventFileWriter::scalars(int64_t step, const TaggedScalars& values) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    put_bytes_field(v, kValueTag, tag);
    put_key(v, kValueSimpleValue, kFixed32);
    put_little_endian(v, float(value));
    put_bytes_field(summary, kSummaryValue, v);
  }
  std::string e = event_header(step);
  put_bytes_field(e, kEventSummary, summary);
  write_event(e);
}

void EventFileWriter::session_start(int64_t step) {
  std::string session_log;
  put_key(session_log, kSessionLogStatus, kVarint);
  put_varint(session_log, kSessionLogStart);
  std::string e = event_header(step);
  put_bytes_field(e, kEventSessionLog, session_log);
  write_event(e);
}

void EventFileWriter::write_event(const std::string& event) {
  std::string record;
  put_little_endian(record, uint64_t(event.size()));
  put_little_endian(record, masked_crc32c(record.data(), 8));
  record += event;
  put_little_endian(record, masked_crc32c(event.data(), event.size()));
  file_.write(record.data(), std::streamsize(record.size()));
  file_.flush();
  KD_CHECK(file_.good(), "cannot write the TensorBoard event file ", path_);
}

}  // namespace kd
