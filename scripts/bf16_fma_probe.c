// Peak of f32 FMA against AVX512_BF16 dot products (vdpbf16ps), one core, register-resident
// chains: gcc -O2 -mavx512f -mavx512bf16 -mfma scripts/bf16_fma_probe.c -o /tmp/probe && /tmp/probe
// (README "Evaluation passes"). Needs a CPU with avx512_bf16.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  long iters=200000000L/12;
  __m512 acc[12]; for(int i=0;i<12;i++) acc[i]=_mm512_set1_ps(0.f);
  __m512 a=_mm512_set1_ps(1.0001f), b=_mm512_set1_ps(0.9999f);
  double t0=now();
  for(long i=0;i<iters;i++){
    #pragma GCC unroll 12
    for(int j=0;j<12;j++) acc[j]=_mm512_fmadd_ps(a,b,acc[j]);
    __asm__ volatile("" : "+v"(a));
  }
  double t1=now();
  float s=0; for(int i=0;i<12;i++) s+=_mm512_reduce_add_ps(acc[i]);
  printf("f32 fma zmm: %.1f GFLOP/s (%g)\n", iters*12.0*32/(t1-t0)/1e9, s);
  __m512bh ab=(__m512bh)_mm512_set1_epi16(0x3f80), bb=(__m512bh)_mm512_set1_epi16(0x3f80);
  for(int i=0;i<12;i++) acc[i]=_mm512_set1_ps(0.f);
  t0=now();
  for(long i=0;i<iters;i++){
    #pragma GCC unroll 12
    for(int j=0;j<12;j++) acc[j]=_mm512_dpbf16_ps(acc[j],ab,bb);
    __asm__ volatile("" : "+v"(ab));
  }
  t1=now();
  s=0; for(int i=0;i<12;i++) s+=_mm512_reduce_add_ps(acc[i]);
  printf("bf16 dpbf16ps zmm: %.1f GFLOP/s (%g)\n", iters*12.0*64/(t1-t0)/1e9, s);
}
