// accelport's simulated accelerator: a small PrivateUse1 backend for tests, not for speed.
//
// Memory: its own allocator (host RAM, but tagged PrivateUse1), so a tensor that was never moved with
// .to(device) cannot be mixed with device tensors: every kernel checks that its tensors share one device.
// Kernels: a boxed fallback runs each op on the CPU kernels, plus explicit kernels for what a fallback
// cannot do (allocation, aliasing views, copies, resize, item(), convolution_overrideable).
// Time: each kernel advances a per-device clock by a fixed cost and returns at once, as an asynchronous
// device's queue would; synchronize, blocking copies and item() wait until the clock has passed.
// Controls are custom ops under torch.ops.accelport_sim (no pybind: the build stays small and fast).

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/ops/_local_scalar_dense_native.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/resize_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

// Defined in libtorch_cpu (declared in ATen/autocast_mode.h, a header too heavy for this build).
namespace at::autocast {
TORCH_API at::ScalarType get_autocast_dtype(at::DeviceType device_type);
}  // namespace at::autocast

namespace {

constexpr int kMaxDevices = 8;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_device_count{1};
std::atomic<int64_t> g_kernel_ns{0};
std::atomic<int64_t> g_copy_ns_per_mib{0};
std::atomic<int64_t> g_launches{0};
std::array<std::atomic<int64_t>, kMaxDevices> g_busy_until{};  // steady-clock ns when each device idles
thread_local c10::DeviceIndex t_current_device = 0;
thread_local bool t_inside_kernel = false;  // copies made by the CPU fallback itself are not device work

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void check_index(c10::DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < g_device_count.load(), "simulated device index ", int(index),
              " is out of range: ", g_device_count.load(), " device(s) configured");
}

// Queue work of cost_ns on a device: it starts when the device is idle and the call returns at once.
void launch(c10::DeviceIndex index, int64_t cost_ns) {
  g_launches.fetch_add(1);
  auto& busy_until = g_busy_until[index];
  int64_t busy = busy_until.load();
  while (!busy_until.compare_exchange_weak(busy, std::max(now_ns(), busy) + cost_ns)) {
  }
}

void wait_idle(c10::DeviceIndex index) {
  int64_t until = g_busy_until[index].load();
  int64_t left = until - now_ns();
  if (left > 0) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(left));
  }
  while (now_ns() < until) {  // sleep_for may wake early on some kernels
  }
}

// ---------------------------------------------------------------- memory

struct SimAllocator final : c10::DeviceAllocator {
  std::mutex mutex;
  std::unordered_map<void*, std::pair<size_t, c10::DeviceIndex>> live;
  std::array<c10::CachingDeviceAllocator::DeviceStats, kMaxDevices> stats;

  c10::DataPtr allocate(size_t nbytes) override {
    c10::DeviceIndex index = t_current_device;
    void* ptr = nbytes ? std::aligned_alloc(64, (nbytes + 63) / 64 * 64) : nullptr;
    TORCH_CHECK(ptr || !nbytes, "simulated device out of memory allocating ", nbytes, " bytes");
    if (ptr) {
      std::lock_guard<std::mutex> lock(mutex);
      live[ptr] = {nbytes, index};
      stats[index].allocated_bytes[0].increase(nbytes);
      stats[index].reserved_bytes[0].increase(nbytes);
      stats[index].allocation[0].increase(1);
    }
    return {ptr, ptr, &release, c10::Device(c10::DeviceType::PrivateUse1, index)};
  }
  static void release(void* ptr);
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t) override {}
  void recordStream(const c10::DataPtr&, c10::Stream) override {}
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex index) override {
    std::lock_guard<std::mutex> lock(mutex);
    return stats[index];
  }
  void resetAccumulatedStats(c10::DeviceIndex index) override {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto* s : {&stats[index].allocated_bytes[0], &stats[index].reserved_bytes[0], &stats[index].allocation[0]}) {
      s->reset_accumulated();
    }
  }
  void resetPeakStats(c10::DeviceIndex index) override {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto* s : {&stats[index].allocated_bytes[0], &stats[index].reserved_bytes[0], &stats[index].allocation[0]}) {
      s->reset_peak();
    }
  }
  bool owns(const void* ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    return live.count(const_cast<void*>(ptr)) > 0;
  }
};

SimAllocator g_allocator;

void SimAllocator::release(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(g_allocator.mutex);
    auto it = g_allocator.live.find(ptr);
    if (it != g_allocator.live.end()) {
      auto& s = g_allocator.stats[it->second.second];
      s.allocated_bytes[0].decrease(it->second.first);
      s.reserved_bytes[0].decrease(it->second.first);
      s.allocation[0].decrease(1);
      g_allocator.live.erase(it);
    }
  }
  std::free(ptr);
}

// Page-locked host memory stand-in: ordinary RAM whose pointers are remembered, so is_pinned() tells.
struct PinnedAllocator final : c10::Allocator {
  std::mutex mutex;
  std::unordered_set<const void*> live;
  c10::DataPtr allocate(size_t nbytes) override {
    void* ptr = nbytes ? std::aligned_alloc(64, (nbytes + 63) / 64 * 64) : nullptr;
    if (ptr) {
      std::lock_guard<std::mutex> lock(mutex);
      live.insert(ptr);
    }
    return {ptr, ptr, &release, c10::Device(c10::DeviceType::CPU)};
  }
  static void release(void* ptr);
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
  bool pinned(const void* ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    return live.count(ptr) > 0;
  }
};

PinnedAllocator g_pinned;

void PinnedAllocator::release(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(g_pinned.mutex);
    g_pinned.live.erase(ptr);
  }
  std::free(ptr);
}

// ---------------------------------------------------------------- device, streams, hooks

struct SimGuard final : c10::impl::DeviceGuardImplInterface {
  static constexpr c10::DeviceType kType = c10::DeviceType::PrivateUse1;
  c10::DeviceType type() const override { return kType; }
  c10::Device exchangeDevice(c10::Device d) const override {
    auto old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(kType, t_current_device); }
  void setDevice(c10::Device d) const override {
    check_index(d.index());
    t_current_device = d.index();
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override { t_current_device = d.index(); }
  // One in-order queue per device: its default stream.
  c10::Stream getStream(c10::Device d) const override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream getDefaultStream(c10::Device d) const override { return getStream(d); }
  c10::Stream exchangeStream(c10::Stream s) const override { return getStream(s.device()); }
  c10::DeviceIndex deviceCount() const noexcept override { return g_device_count.load(); }
  bool queryStream(const c10::Stream& s) const override { return now_ns() >= g_busy_until[s.device_index()].load(); }
  void synchronizeStream(const c10::Stream& s) const override { wait_idle(s.device_index()); }
  void synchronizeDevice(const c10::DeviceIndex index) const override { wait_idle(index); }
  void recordDataPtrOnStream(const c10::DataPtr&, const c10::Stream&) const override {}
};

struct SimHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return g_device_count.load() > 0; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  void init() const override {}
  c10::DeviceIndex deviceCount() const override { return g_device_count.load(); }
  void setCurrentDevice(c10::DeviceIndex index) const override {
    check_index(index);
    t_current_device = index;
  }
  c10::DeviceIndex getCurrentDevice() const override { return t_current_device; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex index) const override {
    auto old = t_current_device;
    setCurrentDevice(index);
    return old;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex index) const override { return exchangeDevice(index); }
  bool isPinnedPtr(const void* ptr) const override { return g_pinned.pinned(ptr); }
  c10::Allocator* getPinnedMemoryAllocator() const override { return &g_pinned; }
  at::Device getDeviceFromPtr(void* ptr) const override {
    std::lock_guard<std::mutex> lock(g_allocator.mutex);
    auto it = g_allocator.live.find(ptr);
    TORCH_CHECK(it != g_allocator.live.end(), "pointer is not simulated device memory");
    return at::Device(c10::DeviceType::PrivateUse1, it->second.second);
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, SimGuard);
REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_allocator);

struct HooksRegistration {
  HooksRegistration() { at::RegisterPrivateUse1HooksInterface(new SimHooks()); }
} g_hooks_registration;

// ---------------------------------------------------------------- kernels

// The same tensor seen as a CPU tensor over the same memory (no copy).
at::Tensor as_cpu(const at::Tensor& t) {
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(at::kCPU));
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool> pin, std::optional<c10::MemoryFormat> memory_format) {
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_generic(size, &g_allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool> pin) {
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_strided_generic(size, stride, &g_allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

void raw_copy(const at::Tensor& src, const at::Tensor& dst) {
  at::Tensor target = dst.is_cpu() ? dst : as_cpu(dst);
  target.copy_(src.is_cpu() ? src : as_cpu(src));
}

// Device <-> host and device <-> device copies, queued like kernels at a cost proportional to their size.
// A blocking copy to or from host memory returns when the queue (this copy included) is done, as
// aclrtMemcpy/cudaMemcpy do; a non-blocking one (from pinned memory) and a device-to-device one return at once.
at::Tensor copy_from(const at::Tensor& src, const at::Tensor& dst, bool non_blocking) {
  if (t_inside_kernel) {  // the CPU fallback moving its operands: part of a kernel already counted
    raw_copy(src, dst);
    return dst;
  }
  c10::DeviceIndex index = (src.is_cpu() ? dst : src).device().index();
  double mib = static_cast<double>(std::max(src.nbytes(), dst.nbytes())) / (1 << 20);
  launch(index, static_cast<int64_t>(mib * g_copy_ns_per_mib.load()));
  raw_copy(src, dst);
  if (!non_blocking && (src.is_cpu() || dst.is_cpu())) {
    wait_idle(index);
  }
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& src, const at::Tensor& dst) {
  at::native::resize_(dst, src.sizes(), std::nullopt);
  return copy_from(src, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  wait_idle(self.device().index());  // .item() is a device-to-host read
  return at::native::_local_scalar_dense_cpu(as_cpu(self));
}

// A kernel may take device tensors and 0-dim CPU tensors (scalars), as CUDA allows; nothing else.
void check_devices(const c10::OperatorHandle& op, const torch::jit::Stack& stack, size_t num_args,
                   c10::Device* device) {
  std::optional<c10::Device> seen;
  auto visit = [&](const at::Tensor& t) {
    if (!t.defined() || (t.is_cpu() && t.dim() == 0)) return;
    if (!seen) {
      seen = t.device();
    } else {
      TORCH_CHECK(*seen == t.device(), "Expected all tensors to be on the same device, but found at least two "
                  "devices, ", *seen, " and ", t.device(), "! (in ", op.schema().operator_name(), ")");
    }
  };
  for (size_t i = stack.size() - num_args; i < stack.size(); ++i) {
    const auto& v = stack[i];
    if (v.isTensor()) {
      visit(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) visit(t);
    } else if (v.isOptionalTensorList()) {
      for (std::optional<at::Tensor> t : v.toOptionalTensorList()) if (t.has_value()) visit(*t);
    }
  }
  *device = seen.value_or(c10::Device(c10::DeviceType::PrivateUse1, t_current_device));
}

struct KernelScope {
  bool previous = t_inside_kernel;
  KernelScope() { t_inside_kernel = true; }
  ~KernelScope() { t_inside_kernel = previous; }
};

// A copy of a CPU result in new device memory (the only copy a functional kernel makes).
at::Tensor to_device(const at::Tensor& cpu, c10::Device device) {
  if (!cpu.defined() || !cpu.is_cpu()) return cpu;
  at::Tensor out = cpu.is_non_overlapping_and_dense()
                       ? at::empty_strided(cpu.sizes(), cpu.strides(), cpu.options().device(device))
                       : at::empty(cpu.sizes(), cpu.options().device(device));
  as_cpu(out).copy_(cpu);
  return out;
}

at::Tensor maybe_as_cpu(const at::Tensor& t) {
  return t.defined() && t.is_privateuseone() ? as_cpu(t) : t;
}

// Run an op on CPU views of its device operands (no input copy), then move its new results to the device.
// An in-place op writes through its view into device memory and returns its own (device) self.
void run_on_views(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::Device device, bool in_place) {
  const auto& schema = op.schema();
  const size_t first = stack->size() - schema.arguments().size();
  c10::IValue self = in_place ? (*stack)[first] : c10::IValue();
  for (size_t i = first; i < stack->size(); ++i) {
    auto& v = (*stack)[i];
    if (v.isTensor()) {
      v = maybe_as_cpu(v.toTensor());
    } else if (v.isTensorList()) {
      std::vector<at::Tensor> list = v.toTensorVector();
      for (auto& t : list) t = maybe_as_cpu(t);
      v = c10::IValue(c10::List<at::Tensor>(list));
    } else if (v.isOptionalTensorList()) {
      c10::List<std::optional<at::Tensor>> list;
      for (std::optional<at::Tensor> t : v.toOptionalTensorList()) {
        list.push_back(t.has_value() ? std::optional<at::Tensor>(maybe_as_cpu(*t)) : std::nullopt);
      }
      v = c10::IValue(list);
    }
  }
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  for (size_t i = stack->size() - schema.returns().size(); i < stack->size(); ++i) {
    auto& v = (*stack)[i];
    if (in_place) {
      v = self;
    } else if (v.isTensor()) {
      v = to_device(v.toTensor(), device);
    } else if (v.isTensorList()) {
      std::vector<at::Tensor> list = v.toTensorVector();
      for (auto& t : list) t = to_device(t, device);
      v = c10::IValue(c10::List<at::Tensor>(list));
    }
  }
}

enum class Aliasing { kNone, kInPlace, kOther };

// kInPlace: only ``self`` is written and every result is ``self`` (add_, relu_...): never resized.
Aliasing aliasing(const c10::FunctionSchema& schema) {
  const auto& args = schema.arguments();
  bool any = false;
  for (const auto& a : args) any = any || a.alias_info();
  for (const auto& r : schema.returns()) any = any || r.alias_info();
  if (!any) return Aliasing::kNone;
  if (args.empty() || !args[0].alias_info() || !args[0].alias_info()->isWrite()) return Aliasing::kOther;
  for (size_t i = 1; i < args.size(); ++i) if (args[i].alias_info()) return Aliasing::kOther;
  for (const auto& r : schema.returns()) {
    if (!r.alias_info() || r.alias_info()->beforeSets() != args[0].alias_info()->beforeSets()) return Aliasing::kOther;
  }
  return Aliasing::kInPlace;
}

// Every op without a kernel of its own. Functional and in-place ops work on device memory directly; other
// aliasing ops (out=, several written operands) take torch's generic CPU fallback, which copies and writes back.
void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::Device device(c10::DeviceType::PrivateUse1, 0);
  check_devices(op, *stack, op.schema().arguments().size(), &device);
  bool outer = !t_inside_kernel;
  KernelScope scope;
  Aliasing kind = aliasing(op.schema());
  if (kind == Aliasing::kOther) {
    at::native::cpu_fallback(op, stack, /*error_on_views=*/true);
  } else {
    run_on_views(op, stack, device, kind == Aliasing::kInPlace);
  }
  if (outer && device.is_privateuseone()) {
    launch(device.index(), g_kernel_ns.load());
  }
}

// The composite convolution sends a non-CPU/CUDA device here; run the CPU convolution on views of the operands.
at::Tensor convolution_overrideable(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, c10::SymIntArrayRef stride,
                                    c10::SymIntArrayRef padding, c10::SymIntArrayRef dilation, bool transposed,
                                    c10::SymIntArrayRef output_padding, c10::SymInt groups) {
  TORCH_CHECK(weight.device() == input.device() && (!bias || !bias->defined() || bias->device() == input.device()),
              "Expected all tensors to be on the same device, but found input on ", input.device(),
              " and weight on ", weight.device(), "! (in aten::convolution)");
  std::optional<at::Tensor> cpu_bias = bias && bias->defined() ? std::optional<at::Tensor>(as_cpu(*bias)) : std::nullopt;
  at::Tensor out_cpu = at::convolution_symint(as_cpu(input), as_cpu(weight), cpu_bias, stride, padding, dilation,
                                              transposed, output_padding, groups);
  launch(input.device().index(), g_kernel_ns.load());
  return to_device(out_cpu, input.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("_local_scalar_dense", local_scalar_dense);
  m.impl("as_strided", at::native::as_strided_tensorimpl);
  m.impl("view", at::native::view);
  m.impl("_reshape_alias", at::native::_reshape_alias);
  m.impl("unfold", at::native::unfold);
  m.impl("resize_", at::native::resize_);
  m.impl("set_.source_Storage", at::native::set_);
  m.impl("set_.source_Tensor", at::native::set_tensor_);
  m.impl("set_.source_Storage_storage_offset", at::native::set_storage_cpu_);
  m.impl("convolution_overrideable", convolution_overrideable);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

// Autocast on the device (torch.autocast("npu", dtype=...)), as torch_npu and CUDA have it: matmuls and
// convolutions in the lower precision, normalisations and softmax in fp32; every other op falls through.
// The same policies as torch's own wrappers (ATen/autocast_mode.h), written as boxed kernels: one function per
// policy instead of a template per op, and without that header: the build went from 16 s to 12 s on 2 cores.
namespace {

enum class CastPolicy { kLowerPrecision, kFp32, kFp32SetOptDtype };

bool autocast_eligible(const c10::IValue& value) {
  if (!value.isTensor()) return false;
  const at::Tensor& t = value.toTensor();
  return t.defined() && t.is_privateuseone() && t.is_floating_point() && t.scalar_type() != at::kDouble;
}

template <CastPolicy policy>
void autocast_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastPrivateUse1);
  const auto& arguments = op.schema().arguments();
  size_t first = stack->size() - arguments.size();
  if (policy == CastPolicy::kFp32SetOptDtype) {
    // softmax: an explicit dtype is kept; otherwise an eligible input computes and returns fp32
    for (size_t i = 0; i < arguments.size(); ++i) {
      if (arguments[i].name() == "dtype" && (*stack)[first + i].isNone() && autocast_eligible((*stack)[first])) {
        (*stack)[first + i] = c10::IValue(static_cast<int64_t>(at::kFloat));
      }
    }
  } else {
    at::ScalarType to = policy == CastPolicy::kFp32 ? at::kFloat : at::autocast::get_autocast_dtype(at::kPrivateUse1);
    for (size_t i = first; i < stack->size(); ++i) {
      if (autocast_eligible((*stack)[i]) && (*stack)[i].toTensor().scalar_type() != to) {
        (*stack)[i] = (*stack)[i].toTensor().to(to);
      }
    }
  }
  op.callBoxed(stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
  auto lower = [] { return torch::CppFunction::makeFromBoxedFunction<&autocast_kernel<CastPolicy::kLowerPrecision>>(); };
  auto fp32 = [] { return torch::CppFunction::makeFromBoxedFunction<&autocast_kernel<CastPolicy::kFp32>>(); };
  for (const char* name : {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d.input",
                           "conv_transpose3d.input", "linear", "matmul", "mm", "bmm", "addmm", "baddbmm",
                           "scaled_dot_product_attention"}) {
    m.impl(name, lower());
  }
  m.impl("layer_norm", fp32());
  m.impl("group_norm", fp32());
  for (const char* name : {"softmax.int", "log_softmax.int"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&autocast_kernel<CastPolicy::kFp32SetOptDtype>>());
  }
}

TORCH_LIBRARY_IMPL(_, AutocastPrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFallthrough());
}

// Controls, called from accelport/simdevice/backend.py.
TORCH_LIBRARY(accelport_sim, m) {
  m.def("configure(int device_count, int kernel_ns, int copy_ns_per_mib) -> ()",
        [](int64_t count, int64_t kernel_ns, int64_t copy_ns) {
          TORCH_CHECK(count >= 1 && count <= kMaxDevices, "device_count must be in 1..", kMaxDevices);
          g_device_count.store(static_cast<int>(count));
          g_kernel_ns.store(kernel_ns);
          g_copy_ns_per_mib.store(copy_ns);
        });
  m.def("launches() -> int", []() -> int64_t { return g_launches.load(); });
  m.def("pending_ns(int device) -> int", [](int64_t index) -> int64_t {
    check_index(static_cast<c10::DeviceIndex>(index));
    return std::max<int64_t>(0, g_busy_until[index].load() - now_ns());
  });
}
