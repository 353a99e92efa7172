/*
 * mla_sim_ops.h - the PTX helpers of kernels/cuda/mla_attn_dev.cuh on the
 * simulator (cuda_sim.h); included there, inside its namespace, when
 * MLA_SIM is defined. Same names and operands as the asm versions.
 */
inline void cp_async16(void *dst, const void *src)
{
    if (!sim::in_smem(dst, 16) || ((uintptr_t)dst & 15) ||
        ((uintptr_t)src & 15))
        sim::fail("cp.async: misaligned or not into shared memory");
    if (sim::cp_early())
        memcpy(dst, src, 16);
    else
        sim::me().open.push_back({dst, src});
}

inline void cp_async_commit()
{
    sim::thr &t = sim::me();
    t.groups.push_back(std::move(t.open));
    t.open.clear();
}

/* all but the newest N committed groups have landed */
template <int N> inline void cp_async_wait()
{
    sim::thr &t = sim::me();
    while (t.groups.size() > (size_t)N) {
        sim::cp_land(t.groups.front());
        t.groups.erase(t.groups.begin());
    }
}

inline void sim_ldm(uint32_t *r, const bf16 *p, int n, int trans)
{
    sim::thr &t = sim::me();
    t.op = sim::OP_LDM;
    t.addr = p;
    t.arg = n;
    t.trans = trans;
    sim::wait_here(sim::WARP);
    for (int j = 0; j < n; j++)
        r[j] = sim::me().out[j];
}

inline void ldm_x4(uint32_t *r, const bf16 *p) { sim_ldm(r, p, 4, 0); }
inline void ldm_x2(uint32_t *r, const bf16 *p) { sim_ldm(r, p, 2, 0); }
inline void ldm_x4_t(uint32_t *r, const bf16 *p) { sim_ldm(r, p, 4, 1); }
inline void ldm_x2_t(uint32_t *r, const bf16 *p) { sim_ldm(r, p, 2, 1); }

inline void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    sim::thr &t = sim::me();
    t.op = sim::OP_MMA;
    for (int i = 0; i < 4; i++) {
        t.a[i] = a[i];
        t.c[i] = c[i];
    }
    t.b[0] = b0;
    t.b[1] = b1;
    sim::wait_here(sim::WARP);
    for (int i = 0; i < 4; i++)
        c[i] = sim::me().c[i];
}
