// kmatmul microbench: q4b ROWS COLS REPS Q4_S|Q4_1|Q8_0 [NT] [THREADS]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include "kernels.h"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int R=atoi(argv[1]),C=atoi(argv[2]),reps=atoi(argv[3]);const char*dts=argv[4];int nt=argc>5?atoi(argv[5]):1;int th=argc>6?atoi(argv[6]):1;
  int nb=C/32; struct kmat W={0}; W.rows=R;W.cols=C;
  srand(1);
  if(!strcmp(dts,"Q8_0")){W.dtype=KDT_Q8_0;}else if(!strcmp(dts,"Q4_1"))W.dtype=KDT_Q4_1;else W.dtype=KDT_Q4_S;
  size_t rb=kmat_row_bytes(W.dtype,C); uint8_t*d=malloc(rb*R); for(size_t i=0;i<rb*R;i++)d[i]=rand(); W.data=d;
  uint16_t*qd=malloc(2*(size_t)R*nb),*qm=malloc(2*(size_t)R*nb); for(size_t i=0;i<(size_t)R*nb;i++){qd[i]=0x2000+(rand()&0x3ff);qm[i]=0xa000+(rand()&0x3ff);}
  if(W.dtype!=KDT_Q4_S){W.qd=qd; if(W.dtype==KDT_Q4_1)W.qm=qm;}
  else{uint8_t*sc=malloc((size_t)R*nb);int8_t*mn=malloc((size_t)R*nb);int eb=kq4s_ex_bytes(C);int8_t*ex=malloc((size_t)R*eb);
    for(size_t i=0;i<(size_t)R*nb;i++){sc[i]=rand();mn[i]=rand();} for(size_t i=0;i<(size_t)R*eb;i++)ex[i]=-10+(rand()%5); W.qsc=sc;W.qmn=mn;W.qexp=ex;}
  if(getenv("RES"))W.resident=1;
  if(getenv("ISA"))kisa_set(atoi(getenv("ISA"))); if(getenv("RS"))kisa_set_row_stream(atoi(getenv("RS")));
  float*x=malloc(sizeof(float)*C*nt),*y=malloc(sizeof(float)*R*nt); for(int i=0;i<C*nt;i++)x[i]=(rand()/(float)RAND_MAX)-0.5f;
  struct kpool*p=kpool_new(th);
  kmatmul(p,&W,x,C,y,R,nt);
  double best=1e9; for(int k=0;k<reps;k++){double t0=now();kmatmul(p,&W,x,C,y,R,nt);double t=now()-t0;if(t<best)best=t;}
  double w=(double)R*C; printf("%s %dx%d nt=%d th=%d: %.3f ms  %.2f Gw/s  %.1f GB/s  y0=%g\n",dts,R,C,nt,th,best*1e3,w/best*1e-9,kmat_bytes(&W)/best*1e-9,y[0]);
  kpool_free(p); return 0;}
