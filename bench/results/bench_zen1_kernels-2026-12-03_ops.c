#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 100000000L
#define BODY(name, OP) __attribute__((target("avx2,fma"),noinline)) static double name(__m256i *io){ \
 __m256i a0=io[0],a1=io[1],a2=io[2],a3=io[3],a4=io[4],a5=io[5],a6=io[6],a7=io[7],b=io[8]; double t0=now(); \
 for(long i=0;i<N;i++){ OP(a0); OP(a1); OP(a2); OP(a3); OP(a4); OP(a5); OP(a6); OP(a7); __asm__ volatile("":"+x"(a0),"+x"(a1),"+x"(a2),"+x"(a3),"+x"(a4),"+x"(a5),"+x"(a6),"+x"(a7)); } \
 double t=now()-t0; io[0]=a0;io[1]=a1;io[2]=a2;io[3]=a3;io[4]=a4;io[5]=a5;io[6]=a6;io[7]=a7; return t*2.9e9/(N*8.0);}
#define MADDUBS(a) a=_mm256_maddubs_epi16(a,b)
#define MADD(a) a=_mm256_madd_epi16(a,b)
#define SRLI(a) a=_mm256_srli_epi16(a,4)
#define AND(a) a=_mm256_and_si256(a,b)
#define ADD(a) a=_mm256_add_epi16(a,b)
#define HADD(a) a=_mm256_hadd_epi32(a,b)
#define HADD16(a) a=_mm256_hadd_epi16(a,b)
#define PERMD(a) a=_mm256_permutevar8x32_epi32(a,b)
#define MADDUBS128(a) a=_mm256_castsi128_si256(_mm_maddubs_epi16(_mm256_castsi256_si128(a),_mm256_castsi256_si128(b)))
#define SHUFB(a) a=_mm256_shuffle_epi8(a,b)
#define CVT(a) a=_mm256_castps_si256(_mm256_cvtepi32_ps(a))
#define FMA(a) a=_mm256_castps_si256(_mm256_fmadd_ps(_mm256_castsi256_ps(a),_mm256_castsi256_ps(b),_mm256_castsi256_ps(b)))
#define SIGN(a) a=_mm256_sign_epi8(a,b)
#define UNP(a) a=_mm256_unpacklo_epi32(a,b)
#define BLEND(a) a=_mm256_blend_epi16(a,b,0xAA)
#define SHUF32(a) a=_mm256_shuffle_epi32(a,0xB1)
#define BSRLI(a) a=_mm256_srli_si256(a,2)
BODY(f_maddubs,MADDUBS) BODY(f_madd,MADD) BODY(f_srli,SRLI) BODY(f_and,AND) BODY(f_add,ADD) BODY(f_hadd,HADD) BODY(f_hadd16,HADD16) BODY(f_permd,PERMD) BODY(f_m128,MADDUBS128) BODY(f_shufb,SHUFB) BODY(f_cvt,CVT) BODY(f_fma,FMA) BODY(f_sign,SIGN) BODY(f_unp,UNP) BODY(f_blend,BLEND) BODY(f_shuf,SHUF32) BODY(f_bsrli,BSRLI)
int main(){ __m256i io[9]; for(int i=0;i<9;i++) io[i]=_mm256_set1_epi8(1+i);
 printf("cycles per op (8 indep chains, 2.9GHz assumed)\n");
 printf("unpack %.2f blend16 %.2f pshufd %.2f bsrli %.2f\n",f_unp(io),f_blend(io),f_shuf(io),f_bsrli(io));
 printf("maddubs %.2f\nmadd %.2f\nsrli %.2f\nand %.2f\nadd %.2f\nhadd32 %.2f\nhadd16 %.2f\npermd %.2f\nmaddubs xmm %.2f\npshufb %.2f\ncvt %.2f\nfma %.2f\nsign %.2f\n",
 f_maddubs(io),f_madd(io),f_srli(io),f_and(io),f_add(io),f_hadd(io),f_hadd16(io),f_permd(io),f_m128(io),f_shufb(io),f_cvt(io),f_fma(io),f_sign(io)); return 0;}
