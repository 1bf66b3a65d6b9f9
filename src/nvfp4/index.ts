/**
 * NVFP4 in eqz (spec/eqz.md §7.6, encoding 4): the payload codec and exact dequantization, quantization from
 * full precision (llm-compressor's absmax, the EntQuant fork's reference optimizer, eqz's exhaustive
 * rate–distortion search on WebGPU or the CPU), and compressed-tensors checkpoints in and out.
 */
export {
  E2M1_MAGNITUDES, E2M1_VALUES, NVFP4_BLOCK, castE2M1, packCodes, roundE2M1Magnitude, unpackCodes,
} from './e2m1.js';
export {
  MAX_GLOBAL_SCALE, MIN_GLOBAL_SCALE, NVFP4_PAYLOAD_HEADER_BYTES, checkNvfp4Tensor, decodeNvfp4Payload, dequantizeNvfp4,
  dequantizeNvfp4F32, encodeNvfp4Payload, reciprocalScale,
  type CodePacking, type DecodedNvfp4, type EncodeNvfp4Options, type Nvfp4OutputDtype, type Nvfp4Tensor,
  type Nvfp4TensorNames, type PayloadContext,
} from './payload.js';
export {
  FUSED_LAYER_NAMES, absMax, absmaxBlockScale, absmaxGlobalScale, castWithBlockScales, fusedGroups,
  quantizeAbsmaxNvfp4, shareGlobalScales, type AbsmaxOptions, type Nvfp4Quantized, type SourceDtype,
} from './absmax.js';
export { DEFAULT_REFERENCE_LAMBDA, quantizeReferenceNvfp4, type ReferenceNvfp4Options } from './reference.js';
export { DEFAULT_SEARCH_PASSES, Nvfp4SearchSession, type Nvfp4SearchOutcome, type Nvfp4SearchSettings } from './search.js';
export {
  DEFAULT_NVFP4_SEARCH_LAMBDA, NVFP4_RATE_CURVE_LAMBDAS, describeNvfp4, findNvfp4LambdaForBits, measureNvfp4RateCurve,
  quantizeNvfp4, searchWithSession,
  type Nvfp4Optimizer, type Nvfp4Result, type QuantizeNvfp4Options,
} from './quantize.js';
export {
  NVFP4_SUFFIXES, detectCompressedTensors, fp8ChannelQuantizationConfig, groupFp8ChannelModules, groupNvfp4Modules,
  ignoreList, nvfp4FromModuleBytes, nvfp4ModuleTensors, nvfp4QuantizationConfig, withQuantizationConfig,
  type CompressedTensorsInfo, type CompressedTensorsScheme, type Fp8ChannelModule, type Nvfp4Module, type TensorInfo,
} from './compressed-tensors.js';
export {
  EXPORT_REPORT, exportNvfp4Folder, exportNvfp4WithTemplate,
  type ExportOptions, type ExportReportEntry, type ModuleLoader, type ModuleShapes, type Nvfp4ExportModule,
  type Nvfp4FolderSource,
} from './export.js';
