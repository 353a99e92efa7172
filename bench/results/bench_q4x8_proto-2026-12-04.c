// prototype: Q4_S with 8 rows interleaved (rows in lanes), 1 token, AVX2
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <immintrin.h>
#include <pthread.h>
#include "cpu/kcpu.h"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
struct p8 { int rows, cols, nb, ng, nsl; uint8_t *w, *sc; int8_t *mn, *ex; };
static void pack(const struct kmat *W, struct p8 *P){
  int nb=W->cols/32, ng=(nb+7)/8, nsl=(W->rows+7)/8; P->rows=W->rows;P->cols=W->cols;P->nb=nb;P->ng=ng;P->nsl=nsl;
  P->w=aligned_alloc(64,(size_t)nsl*nb*128); P->sc=malloc((size_t)nsl*nb*8); P->mn=malloc((size_t)nsl*nb*8); P->ex=malloc((size_t)nsl*ng*16);
  memset(P->w,0,(size_t)nsl*nb*128); memset(P->sc,0,(size_t)nsl*nb*8); memset(P->mn,0,(size_t)nsl*nb*8); memset(P->ex,0,(size_t)nsl*ng*16);
  size_t rb=nb*16; int eb=kq4s_ex_bytes(W->cols);
  for(int r=0;r<W->rows;r++){int s=r/8,l=r%8; const uint8_t*wr=(const uint8_t*)W->data+(size_t)r*rb;
    for(int j=0;j<nb;j++){ uint8_t*o=P->w+((size_t)s*nb+j)*128; for(int v=0;v<4;v++) memcpy(o+32*v+4*l, wr+16*j+4*v,4);
      P->sc[((size_t)s*nb+j)*8+l]=W->qsc[(size_t)r*nb+j]; P->mn[((size_t)s*nb+j)*8+l]=W->qmn[(size_t)r*nb+j]; }
    for(int g=0;g<ng;g++){P->ex[((size_t)s*ng+g)*16+l]=W->qexp[(size_t)r*eb+2*g]; P->ex[((size_t)s*ng+g)*16+8+l]=W->qexp[(size_t)r*eb+2*g+1];}
  }
}
#ifndef PF
#define PF 4096
#endif
#define SL 2
__attribute__((target("avx2,fma,f16c"))) static inline __attribute__((always_inline)) void p8_pass(const struct p8 *P, const int *ss, int nsl, const uint8_t *xq, float *y){
  const int nb=P->nb, cols=P->cols; const float *xd=(const float*)(xq+cols), *xs=xd+nb; const int8_t*x=(const int8_t*)xq;
  const __m256i f=_mm256_set1_epi8(15), one=_mm256_set1_epi16(1);
    for(int cs=0;cs<cols;cs+=KMM_KSEG){ int ce=cs+KMM_KSEG<cols?cs+KMM_KSEG:cols; int j0=cs/32, je=ce/32;
      __m256 C[SL][16]; __m256 pe[SL], pf[SL];
      for(int j=j0;j<je;j++){ int g=(j-j0)&15;
        if((j&7)==0){ _Pragma("GCC unroll 2") for(int q=0;q<nsl;q++){ const int8_t*e=P->ex+((size_t)ss[q]*P->ng+j/8)*16; __m256i ev=_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)e)), fv=_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(e+8)));
          const __m256i b=_mm256_set1_epi32(127); pe[q]=_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ev,b),23)); pf[q]=_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(fv,b),23)); }}
        const uint8_t*w[SL]; __m256i a0[SL],a1[SL];
        _Pragma("GCC unroll 2") for(int q=0;q<nsl;q++){ w[q]=P->w+((size_t)ss[q]*nb+j)*128; _mm_prefetch((const char*)w[q]+PF,_MM_HINT_T0); _mm_prefetch((const char*)w[q]+PF+64,_MM_HINT_T0); a0[q]=_mm256_setzero_si256(); a1[q]=a0[q];}
        size_t lo=xq_off(1,nb,j,0), hi=xq_off(1,nb,j,16);
        _Pragma("GCC unroll 4") for(int k=0;k<4;k++){ int32_t el,eh; memcpy(&el,x+lo+4*k,4); memcpy(&eh,x+hi+4*k,4); __m256i bl=_mm256_set1_epi32(el), bh=_mm256_set1_epi32(eh);
          _Pragma("GCC unroll 2") for(int q=0;q<nsl;q++){ __m256i v=_mm256_load_si256((const __m256i*)(w[q]+32*k));
          a0[q]=_mm256_add_epi16(a0[q],_mm256_maddubs_epi16(_mm256_and_si256(v,f),bl));
          a1[q]=_mm256_add_epi16(a1[q],_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v,4),f),bh)); }}
        __m256 xdj=_mm256_set1_ps(xd[j]), xsj=_mm256_set1_ps(xs[j]);
        _Pragma("GCC unroll 2") for(int q=0;q<nsl;q++){
        __m256i is=_mm256_madd_epi16(_mm256_add_epi16(a0[q],a1[q]),one);
        __m256 d=_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(P->sc+((size_t)ss[q]*nb+j)*8)))),pe[q]);
        __m256 m=_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(P->mn+((size_t)ss[q]*nb+j)*8)))),pf[q]);
        __m256 c= j-j0<16?_mm256_setzero_ps():C[q][g];
        c=_mm256_fmadd_ps(_mm256_cvtepi32_ps(is),_mm256_mul_ps(d,xdj),c);
        c=_mm256_fmadd_ps(m,xsj,c);
        C[q][g]=c; }}
      int ns=je-j0; _Pragma("GCC unroll 2") for(int q=0;q<nsl;q++){ __m256 c[16],s8[8]; for(int g=0;g<16;g++)c[g]=g<ns?C[q][g]:_mm256_setzero_ps();
      for(int i=0;i<8;i++)s8[i]=_mm256_add_ps(c[i],c[i+8]);
      __m256 v=_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s8[0],s8[4]),_mm256_add_ps(s8[2],s8[6])),_mm256_add_ps(_mm256_add_ps(s8[1],s8[5]),_mm256_add_ps(s8[3],s8[7])));
      float*yp=y+8*ss[q]; if(cs>0)v=_mm256_add_ps(_mm256_loadu_ps(yp),v); _mm256_storeu_ps(yp,v);}
    }
}
__attribute__((target("avx2,fma,f16c"))) static void p8_slabs(const struct p8 *P, int s0, int s1, const uint8_t *xq, float *y){
  if(getenv("ONE")){ for(int s=s0;s<s1;s++){int ss[1]={s}; p8_pass(P,ss,1,xq,y);} return; }
  if(getenv("Q4")){ int n=s1-s0, h=(n+3)/4; for(int i=0;i<h;i++){int ss[4],c=0; for(int q=0;q<4;q++) if(s0+q*h+i<s1) ss[c++]=s0+q*h+i; if(c==4)p8_pass(P,ss,4,xq,y); else for(int q=0;q<c;q++)p8_pass(P,ss+q,1,xq,y);} return;}
  int n=s1-s0, h=(n+1)/2; if(getenv("ADJ")){ for(int s=s0;s<s1;s+=2){int ss[2]={s,s+1}; if(s+1<s1)p8_pass(P,ss,2,xq,y); else p8_pass(P,ss,1,xq,y);} return;}
  for(int i=0;i<h;i++){ int ss[2]={s0+i,s0+h+i}; if(s0+h+i<s1) p8_pass(P,ss,2,xq,y); else p8_pass(P,ss,1,xq,y); }
}
struct targ{const struct p8*P;int s0,s1;const uint8_t*xq;float*y;};
static void*tf(void*a){struct targ*t=a;p8_slabs(t->P,t->s0,t->s1,t->xq,t->y);return 0;}
static void p8_mt(const struct p8*P,const uint8_t*xq,float*y,int nt){pthread_t th[8];struct targ a[8];int per=(P->nsl+nt-1)/nt;
 for(int i=0;i<nt;i++){a[i]=(struct targ){P,i*per,(i+1)*per<P->nsl?(i+1)*per:P->nsl,xq,y};if(i)pthread_create(&th[i],0,tf,&a[i]);}
 tf(&a[0]);for(int i=1;i<nt;i++)pthread_join(th[i],0);}
__attribute__((target("avx2"))) static void*rdf(void*a){struct targ*t=a;const __m256i*p=(const __m256i*)t->P->w+(size_t)t->s0*4;__m256i s=_mm256_setzero_si256();for(size_t i=0;i<(size_t)(t->s1-t->s0)*4;i+=4){s=_mm256_add_epi32(s,_mm256_load_si256(p+i));s=_mm256_add_epi32(s,_mm256_load_si256(p+i+1));s=_mm256_add_epi32(s,_mm256_load_si256(p+i+2));s=_mm256_add_epi32(s,_mm256_load_si256(p+i+3));}t->y[0]+=_mm256_extract_epi32(s,0);return 0;}
static void rd_mt(const struct p8*P,float*y,int nt){size_t nblk=(size_t)P->nsl*P->nb;pthread_t th[8];struct targ a[8];size_t per=(nblk+nt-1)/nt;
 for(int i=0;i<nt;i++){a[i]=(struct targ){P,(int)(i*per),(int)((i+1)*per<nblk?(i+1)*per:nblk),0,y+64*i};if(i)pthread_create(&th[i],0,rdf,&a[i]);}
 rdf(&a[0]);for(int i=1;i<nt;i++)pthread_join(th[i],0);}
int main(int argc,char**argv){
  int R=atoi(argv[1]),C=atoi(argv[2]),reps=atoi(argv[3]); int nb=C/32; struct kmat W={0}; W.rows=R;W.cols=C;W.dtype=KDT_Q4_S; srand(1);
  size_t rb=kmat_row_bytes(W.dtype,C); uint8_t*d=malloc(rb*R); for(size_t i=0;i<rb*R;i++)d[i]=rand(); W.data=d;
  uint8_t*sc=malloc((size_t)R*nb);int8_t*mn=malloc((size_t)R*nb);int eb=kq4s_ex_bytes(C);int8_t*ex=malloc((size_t)R*eb);
  for(size_t i=0;i<(size_t)R*nb;i++){sc[i]=rand();mn[i]=rand();} for(size_t i=0;i<(size_t)R*eb;i++)ex[i]=-10+(rand()%5); W.qsc=sc;W.qmn=mn;W.qexp=ex;
  if(getenv("RES"))W.resident=1;
  kisa_set(KISA_AVX2);
  float*x=malloc(sizeof(float)*C),*y=malloc(sizeof(float)*R),*y2=malloc(sizeof(float)*(R+8)); for(int i=0;i<C;i++)x[i]=(rand()/(float)RAND_MAX)-0.5f;
  struct p8 P; pack(&W,&P);
  uint8_t*xq=aligned_alloc(64,KQA_LDQ(C)+64); kqa_quantize(KDT_Q4_1,x,C,C,1,xq,KQA_LDQ(C));
  kmatmul(NULL,&W,x,C,y,R,1); p8_slabs(&P,0,P.nsl,xq,y2);
  if(memcmp(y,y2,4*R)){int bad=0;for(int i=0;i<R;i++)if(y[i]!=y2[i]){if(bad<5)printf("row %d %g %g\n",i,y[i],y2[i]);bad++;} printf("MISMATCH %d rows\n",bad);} else printf("bits equal\n");
  double ba=1e9,bb=1e9; for(int k=0;k<reps;k++){double t0=now();kmatmul(NULL,&W,x,C,y,R,1);double t1=now();kqa_quantize(KDT_Q4_1,x,C,C,1,xq,KQA_LDQ(C));p8_slabs(&P,0,P.nsl,xq,y2);double t2=now(); if(t1-t0<ba)ba=t1-t0; if(t2-t1<bb)bb=t2-t1;}
  int NT=getenv("NT")?atoi(getenv("NT")):1; struct kpool*pool=kpool_new(NT); double ca=1e9,cb=1e9,cr=1e9; float*yr=calloc(1024,4);
  for(int k=0;k<reps;k++){double t0=now();kmatmul(pool,&W,x,C,y,R,1);double t1=now();kqa_quantize(KDT_Q4_1,x,C,C,1,xq,KQA_LDQ(C));p8_mt(&P,xq,y2,NT);double t2=now();rd_mt(&P,yr,NT);double t3=now();
    if(t1-t0<ca)ca=t1-t0; if(t2-t1<cb)cb=t2-t1; if(t3-t2<cr)cr=t3-t2;}
  double by=(double)kmat_bytes(&W);
  printf("%d threads: kmatmul %.3f ms %.1f GB/s | p8 %.3f ms %.1f GB/s | read of the packed weights only %.1f GB/s (weights %.0f%% of bytes) | p8/kmatmul %.2fx\n",NT,ca*1e3,by/ca*1e-9,cb*1e3,by/cb*1e-9,(double)P.nsl*P.nb*128/cr*1e-9,100.0*P.nsl*P.nb*128/by,ca/cb);
  double w=(double)R*C; printf("%dx%d kmatmul %.3f ms %.2f Gw/s | p8 %.3f ms %.2f Gw/s | ratio %.2fx\n",R,C,ba*1e3,w/ba*1e-9,bb*1e3,w/bb*1e-9,ba/bb);
}
