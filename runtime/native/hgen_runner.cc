// hgen_runner: run an Apache TVM relax library exported by `hgen` on a raw input file, without Python.
//
// Usage: hgen_runner LIB INPUT OUTPUT --shape 1,28,28,1 [--dtype float32|int8] [--repeat N]
//                    [--expect FILE --atol X]
// INPUT/OUTPUT are raw little-endian tensors (C order). With --expect, the output is compared with FILE
// (float32 outputs within --atol, integer outputs exactly) and the exit code says whether they match.
// The runner does not verify bundle signatures: the device agent (Python) or a secure-boot chain must.

#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/container/tensor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR

struct Options {
  std::string library, input, output, expect;
  std::vector<int64_t> shape;
  DLDataType dtype{kDLFloat, 32, 1};
  int repeat = 1;
  double atol = 1e-5;
};

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> dims;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    const long long dim = std::stoll(item);
    if (dim <= 0) throw std::invalid_argument("shape dimensions must be positive: " + text);
    dims.push_back(dim);
  }
  if (dims.empty()) throw std::invalid_argument("empty --shape");
  return dims;
}

DLDataType ParseDtype(const std::string& name) {
  if (name == "float32") return DLDataType{kDLFloat, 32, 1};
  if (name == "int8") return DLDataType{kDLInt, 8, 1};
  if (name == "uint8") return DLDataType{kDLUInt, 8, 1};
  throw std::invalid_argument("unsupported --dtype " + name + " (float32, int8, uint8)");
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--shape") options.shape = ParseShape(value());
    else if (arg == "--dtype") options.dtype = ParseDtype(value());
    else if (arg == "--repeat") options.repeat = std::max(1, std::stoi(value()));
    else if (arg == "--expect") options.expect = value();
    else if (arg == "--atol") options.atol = std::stod(value());
    else if (arg.rfind("--", 0) == 0) throw std::invalid_argument("unknown option " + arg);
    else positional.push_back(arg);
  }
  if (positional.size() != 3 || options.shape.empty()) {
    throw std::invalid_argument("usage: hgen_runner LIB INPUT OUTPUT --shape D0,D1,... [--dtype float32|int8]");
  }
  options.library = positional[0];
  options.input = positional[1];
  options.output = positional[2];
  return options;
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

size_t ByteSize(const std::vector<int64_t>& shape, DLDataType dtype) {
  size_t count = 1;
  for (int64_t dim : shape) count *= static_cast<size_t>(dim);
  return count * ((dtype.bits * dtype.lanes + 7) / 8);
}

// 64-byte aligned CPU buffers, as TVM's own allocator gives generated kernels.
struct AlignedCPUAlloc {
  void AllocData(DLTensor* tensor) {
    const size_t size = (tvm::ffi::GetDataSize(*tensor) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, std::max<size_t>(size, 64));
    if (tensor->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

// Load the library, create the relax VM on the CPU and return its "main" function.
tvm::ffi::Function LoadMain(const std::string& path) {
  tvm::ffi::Module library = tvm::ffi::Module::LoadFromFile(path);
  auto load_executable = library->GetFunction("vm_load_executable", true);
  if (!load_executable) throw std::runtime_error(path + " is not a relax VM library (no vm_load_executable)");
  tvm::ffi::Module vm = (*load_executable)().cast<tvm::ffi::Module>();
  auto initialize = vm->GetFunction("vm_initialization", true);
  (*initialize)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  auto main_function = vm->GetFunction("main", true);
  if (!main_function) throw std::runtime_error(path + " has no relax function 'main'");
  return *main_function;
}

tvm::ffi::Tensor FirstTensor(const tvm::ffi::Any& result) {
  if (auto tensor = result.try_cast<tvm::ffi::Tensor>()) return *tensor;
  auto array = result.cast<tvm::ffi::Array<tvm::ffi::Any>>();
  return array[0].cast<tvm::ffi::Tensor>();
}

bool Matches(const std::vector<char>& got, const std::vector<char>& want, DLDataType dtype, double atol) {
  if (got.size() != want.size()) {
    std::cerr << "output has " << got.size() << " bytes, expected " << want.size() << "\n";
    return false;
  }
  if (dtype.code != kDLFloat) return std::memcmp(got.data(), want.data(), got.size()) == 0;
  const auto* a = reinterpret_cast<const float*>(got.data());
  const auto* b = reinterpret_cast<const float*>(want.data());
  double worst = 0.0;
  for (size_t i = 0; i < got.size() / sizeof(float); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  std::cout << "max_abs_diff=" << worst << "\n";
  return worst <= atol;
}

int Run(const Options& options) {
  std::vector<char> input = ReadFile(options.input);
  if (input.size() != ByteSize(options.shape, options.dtype)) {
    throw std::runtime_error("input has " + std::to_string(input.size()) + " bytes, --shape/--dtype need " +
                             std::to_string(ByteSize(options.shape, options.dtype)));
  }
  tvm::ffi::Function main_function = LoadMain(options.library);
  tvm::ffi::Shape shape(options.shape);
  tvm::ffi::Tensor tensor =
      tvm::ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), shape, options.dtype, DLDevice{kDLCPU, 0});
  std::memcpy(tensor.data_ptr(), input.data(), input.size());

  tvm::ffi::Tensor result;
  std::vector<double> micros;
  for (int i = 0; i < options.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    result = FirstTensor(main_function(tensor));
    micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(micros.begin(), micros.end());
  const tvm::ffi::ShapeView result_shape = result.shape();
  std::vector<int64_t> out_shape(result_shape.begin(), result_shape.end());
  std::vector<char> output(ByteSize(out_shape, result.dtype()));
  std::memcpy(output.data(), static_cast<const char*>(result.data_ptr()) + result.byte_offset(), output.size());
  std::ofstream(options.output, std::ios::binary).write(output.data(), static_cast<std::streamsize>(output.size()));

  std::cout << "output_shape=";
  for (size_t i = 0; i < out_shape.size(); ++i) std::cout << (i ? "," : "") << out_shape[i];
  std::cout << " runs=" << options.repeat << " median_us=" << micros[micros.size() / 2] << "\n";
  if (!options.expect.empty() && !Matches(output, ReadFile(options.expect), result.dtype(), options.atol)) {
    std::cerr << "output differs from " << options.expect << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const std::exception& error) {
    std::cerr << "hgen_runner: error: " << error.what() << "\n";
    return 2;
  }
}
