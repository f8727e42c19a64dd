// Entry point of the kernels WebAssembly module (AssemblyScript). Everything works on raw byte
// offsets into the imported shared memory (one instance per arena per thread); nothing allocates.
export { matvec_q8_0, matvec_q4_0, matvec_f32, matvec_f16, matvec_bf16 } from './matvec';
export {
  prepare_q8_0, prepare_f16, prepare_bf16, copy_bytes, dequant_q8_0, dequant_q4_0, dequant_f16,
  dequant_bf16, rmsnorm, rope, store_f16, silu_mul, relu_mul, add, softmax,
} from './ops';
export { attention } from './attention';
export { matvect_q8_0, matvect_q4_0, matvect_f32, matvect_f16, matvect_bf16 } from './matvect';
export { gemm_f32, gemm_work_bytes } from './gemm';
