// The TorchScript node kinds the graph pass looks at (internal). Matched by name, so ops absent
// from one LibTorch version (aten::scaled_dot_product_attention before 2.0) still compile.
#pragma once

#include <ATen/core/symbol.h>

namespace qkscope::detail::sym {

inline c10::Symbol op(const char* qualified) { return c10::Symbol::fromQualString(qualified); }

// Score products.
inline const c10::Symbol kMatmul = op("aten::matmul");
inline const c10::Symbol kBmm = op("aten::bmm");
inline const c10::Symbol kBaddbmm = op("aten::baddbmm");
inline const c10::Symbol kEinsum = op("aten::einsum");
inline const c10::Symbol kSdpa = op("aten::scaled_dot_product_attention");
inline const c10::Symbol kEncoderLayerFwd = op("aten::_transformer_encoder_layer_fwd");
inline const c10::Symbol kNativeMha = op("aten::_native_multi_head_attention");
inline const c10::Symbol kCapture = op("qkscope::capture");
inline const c10::Symbol kCaptureFused = op("qkscope::capture_fused");

// Projections.
inline const c10::Symbol kLinear = op("aten::linear");
inline const c10::Symbol kAddmm = op("aten::addmm");
inline const c10::Symbol kMm = op("aten::mm");

// Layout.
inline const c10::Symbol kTranspose = op("aten::transpose");
inline const c10::Symbol kPermute = op("aten::permute");
inline const c10::Symbol kContiguous = op("aten::contiguous");
inline const c10::Symbol kClone = op("aten::clone");
inline const c10::Symbol kDetach = op("aten::detach");
inline const c10::Symbol kView = op("aten::view");
inline const c10::Symbol kReshape = op("aten::reshape");
inline const c10::Symbol kFlatten = op("aten::flatten");
inline const c10::Symbol kUnflatten = op("aten::unflatten");
inline const c10::Symbol kUnsqueeze = op("aten::unsqueeze");
inline const c10::Symbol kSqueeze = op("aten::squeeze");

// Scalars and arithmetic.
inline const c10::Symbol kMul = op("aten::mul");
inline const c10::Symbol kMulInPlace = op("aten::mul_");
inline const c10::Symbol kDiv = op("aten::div");
inline const c10::Symbol kDivInPlace = op("aten::div_");
inline const c10::Symbol kAdd = op("aten::add");
inline const c10::Symbol kAddInPlace = op("aten::add_");
inline const c10::Symbol kSub = op("aten::sub");
inline const c10::Symbol kSqrt = op("aten::sqrt");
inline const c10::Symbol kRsqrt = op("aten::rsqrt");
inline const c10::Symbol kReciprocal = op("aten::reciprocal");
inline const c10::Symbol kNeg = op("aten::neg");
inline const c10::Symbol kExp = op("aten::exp");
inline const c10::Symbol kPow = op("aten::pow");
inline const c10::Symbol kSize = op("aten::size");
inline const c10::Symbol kDim = op("aten::dim");
inline const c10::Symbol kNumel = op("aten::numel");
inline const c10::Symbol kLen = op("aten::len");
inline const c10::Symbol kFloat = op("aten::Float");
inline const c10::Symbol kScalarImplicit = op("aten::ScalarImplicit");
inline const c10::Symbol kScalarTensor = op("aten::scalar_tensor");
inline const c10::Symbol kTensor = op("aten::tensor");
inline const c10::Symbol kFull = op("aten::full");
inline const c10::Symbol kTo = op("aten::to");
inline const c10::Symbol kTypeAs = op("aten::type_as");
inline const c10::Symbol kNumToTensor = op("prim::NumToTensor");

// Between scores and softmax.
inline const c10::Symbol kMaskedFill = op("aten::masked_fill");
inline const c10::Symbol kMaskedFillInPlace = op("aten::masked_fill_");
inline const c10::Symbol kWhere = op("aten::where");
inline const c10::Symbol kClamp = op("aten::clamp");
inline const c10::Symbol kMaximum = op("aten::maximum");
inline const c10::Symbol kMinimum = op("aten::minimum");
inline const c10::Symbol kTanh = op("aten::tanh");
inline const c10::Symbol kSoftmax = op("aten::softmax");
inline const c10::Symbol kSoftmaxPrivate = op("aten::_softmax");
inline const c10::Symbol kLogSoftmax = op("aten::log_softmax");
inline const c10::Symbol kSafeSoftmax = op("aten::_safe_softmax");

// Graph structure.
inline const c10::Symbol kGetAttr = op("prim::GetAttr");
inline const c10::Symbol kConstant = op("prim::Constant");
inline const c10::Symbol kListConstruct = op("prim::ListConstruct");
inline const c10::Symbol kListUnpack = op("prim::ListUnpack");
inline const c10::Symbol kTupleUnpack = op("prim::TupleUnpack");
inline const c10::Symbol kGetItem = op("aten::__getitem__");
inline const c10::Symbol kIf = op("prim::If");
inline const c10::Symbol kLoop = op("prim::Loop");

}  // namespace qkscope::detail::sym
