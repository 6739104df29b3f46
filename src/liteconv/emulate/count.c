/*
 * liteconv's instruction-counting TCG plugin for qemu-user (plugin API version 1, as in
 * Debian 12's qemu 7.2). Built with the system compiler on first use (emulate/tools.py).
 *
 * Every translation block gets an execution counter, added to inline (no callback per
 * block). The guest marks the region to count with write(2) on a file descriptor no
 * process has (MARK_FD) whose byte count says what it marks: MARK_START + k opens region k,
 * MARK_STOP closes it. At each stop the plugin appends to the file given as out=PATH:
 *
 *   region K INSTRUCTIONS
 *   tb VADDR N_INSNS EXECUTIONS HEXBYTES      (blocks executed inside the region)
 *
 *   mem LOADS STORES L1_MISSES L2_MISSES L2_WRITEBACKS L2_REREADS   (with a cache model)
 *
 * and at exit "total INSTRUCTIONS" of the whole run. Counting is per block: a region
 * starts after the marking syscall's block and ends with the closing one's, so a region
 * holds exactly the instructions the guest ran between the two system calls (the closing
 * call's own setup included). One vCPU is counted exactly; several add racily.
 *
 * Cache model (plugin arguments l1d=KB:WAYS[:POLICY],l2=KB:WAYS[:POLICY]; none:
 * instructions only, faster): every guest load and store (a callback per access) goes
 * through a set-associative, write-back, write-allocate L1 data cache and a last-level
 * cache behind it, 64-byte lines, indexed by virtual address. POLICY is the replacement:
 * lru (the default) or random (an empty way first, else a way drawn by a xorshift
 * generator with a fixed seed: the same accesses give the same misses on every host).
 * L2_MISSES are lines read from memory, L2_WRITEBACKS dirty lines written back to it:
 * together the DRAM traffic. L2_REREADS: the misses on lines already read from memory
 * since the last MARK_INVOKE (or MARK_START), i.e. the traffic of data the invoke streams
 * through the cache more than once (a GEMM's weights once per tile of rows); each invoke
 * opens with MARK_INVOKE. MARK_WARM turns the model on without counting (a warm-up invoke
 * fills the caches as on a board); MARK_START turns it on too; it stays on until the run
 * ends.
 *
 * The API is declared here (Debian ships no qemu-plugin.h); only what is used.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct {
    const char *target_name;
    struct { int min, cur; } version;
    bool system_emulation;
} qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                             uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                             uint64_t a7, uint64_t a8);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef uint32_t qemu_plugin_meminfo_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
typedef void (*mem_cb_t)(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                         void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, mem_cb_t cb,
                                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw,
                                      void *userdata);
unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info);
bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MARK_FD ((uint64_t)(int64_t)-7421)
#define MARK_STOP 1
#define MARK_WARM 2
#define MARK_INVOKE 3
#define MARK_START 16
#define WRITE_AARCH64 64
#define WRITE_ARM 4

typedef struct Block {
    uint64_t count, start, vaddr;
    uint32_t n_insns, n_bytes;
    uint8_t *bytes;
    struct Block *next;
} Block;

static Block *blocks;
static FILE *out;
static long region = -1;
static int64_t write_nr = WRITE_AARCH64;

/* ---- cache model ---- */
#define LINE_SHIFT 6

typedef struct {
    uint64_t sets, ways, clock, rng;
    bool random;
    uint64_t *tag;   /* line address + 1; 0 = empty */
    uint64_t *used;  /* LRU stamp */
    uint8_t *dirty;
} Cache;

typedef struct { uint64_t loads, stores, l1_misses, l2_misses, l2_writebacks, l2_rereads; } MemStats;

/* The lines read from memory in this invoke: open addressing, a slot is taken when its
 * stamp is the invoke's (a new invoke empties the set by changing the stamp). */
typedef struct {
    uint64_t cap, used, stamp;
    uint64_t *line;
    uint64_t *at;
} LineSet;
static LineSet fetched = {0, 0, 1, NULL, NULL};

static bool lineset_grow(LineSet *s);

/* Add line; true when it was already there. */
static bool lineset_add(LineSet *s, uint64_t line) {
    if ((s->used + 1) * 2 > s->cap && !lineset_grow(s)) return false;
    uint64_t mask = s->cap - 1, i = (line * 0x9E3779B97F4A7C15ull >> 17) & mask;
    for (; s->at[i] == s->stamp; i = (i + 1) & mask)
        if (s->line[i] == line) return true;
    s->line[i] = line;
    s->at[i] = s->stamp;
    s->used++;
    return false;
}

static bool lineset_grow(LineSet *s) {
    LineSet bigger = {s->cap ? s->cap * 2 : 1u << 16, 0, s->stamp, NULL, NULL};
    bigger.line = malloc(bigger.cap * sizeof *bigger.line);
    bigger.at = calloc(bigger.cap, sizeof *bigger.at);
    if (!bigger.line || !bigger.at) {
        free(bigger.line);
        free(bigger.at);
        return false;
    }
    for (uint64_t i = 0; i < s->cap; i++)
        if (s->at[i] == s->stamp) lineset_add(&bigger, s->line[i]);
    free(s->line);
    free(s->at);
    *s = bigger;
    return true;
}

static void lineset_clear(LineSet *s) {
    s->stamp++;
    s->used = 0;
}

static Cache l1, l2;
static bool caches, simulate;
static MemStats mem, mem_start;

static bool cache_init(Cache *c, const char *spec) {
    unsigned long kb = 0, ways = 0;
    char policy[16] = "lru";
    if (sscanf(spec, "%lu:%lu:%15s", &kb, &ways, policy) < 2 || !kb || !ways) return false;
    if (strcmp(policy, "lru") && strcmp(policy, "random")) return false;
    c->random = strcmp(policy, "random") == 0;
    c->rng = 0x9E3779B97F4A7C15ull;
    uint64_t lines = (uint64_t)kb * 1024 >> LINE_SHIFT;
    if (lines % ways) return false;
    c->sets = lines / ways;
    c->ways = ways;
    c->tag = calloc(lines, sizeof *c->tag);
    c->used = calloc(lines, sizeof *c->used);
    c->dirty = calloc(lines, 1);
    return c->tag && c->used && c->dirty;
}

/* Look line up in c; on a miss fill it. Returns true on a hit; *victim gets a dirty line
 * the fill evicted (+1; 0 when none). */
static bool cache_access(Cache *c, uint64_t line, bool store, uint64_t *victim) {
    uint64_t base = (line % c->sets) * c->ways, lru = base, empty = UINT64_MAX;
    *victim = 0;
    c->clock++;
    for (uint64_t w = base; w < base + c->ways; w++) {
        if (c->tag[w] == line + 1) {
            c->used[w] = c->clock;
            c->dirty[w] |= store;
            return true;
        }
        if (!c->tag[w] && empty == UINT64_MAX) empty = w;
        if (c->used[w] < c->used[lru]) lru = w;
    }
    if (c->random) {
        c->rng ^= c->rng << 13;
        c->rng ^= c->rng >> 7;
        c->rng ^= c->rng << 17;
        lru = empty != UINT64_MAX ? empty : base + c->rng % c->ways;
    }
    if (c->tag[lru] && c->dirty[lru]) *victim = c->tag[lru];
    c->tag[lru] = line + 1;
    c->used[lru] = c->clock;
    c->dirty[lru] = store;
    return false;
}

static void touch_line(uint64_t line, bool store) {
    uint64_t victim, evicted;
    if (cache_access(&l1, line, store, &victim)) return;
    mem.l1_misses++;
    if (victim) {  /* the L1's dirty victim is written into the L2 (no memory read) */
        if (!cache_access(&l2, victim - 1, true, &evicted) && evicted) mem.l2_writebacks++;
    }
    if (!cache_access(&l2, line, false, &evicted)) {
        mem.l2_misses++;
        if (lineset_add(&fetched, line)) mem.l2_rereads++;
        if (evicted) mem.l2_writebacks++;
    }
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata) {
    if (!simulate) return;
    bool store = qemu_plugin_mem_is_store(info);
    uint64_t size = 1ull << qemu_plugin_mem_size_shift(info);
    if (store) mem.stores++; else mem.loads++;
    uint64_t first = vaddr >> LINE_SHIFT, last = (vaddr + size - 1) >> LINE_SHIFT;
    for (uint64_t line = first; line <= last; line++) touch_line(line, store);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb), size = 0;
    for (size_t i = 0; i < n; i++) size += qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i));
    Block *b = calloc(1, sizeof *b);
    b->bytes = malloc(size ? size : 1);
    for (size_t i = 0, at = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t len = qemu_plugin_insn_size(insn);
        memcpy(b->bytes + at, qemu_plugin_insn_data(insn), len);
        at += len;
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = (uint32_t)n;
    b->n_bytes = (uint32_t)size;
    b->next = blocks;  /* translation is serialised by qemu's tb lock */
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
    if (caches) {
        for (size_t i = 0; i < n; i++)
            qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_mem,
                                             QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
    if (num != write_nr || (a1 != MARK_FD && (uint32_t)a1 != (uint32_t)MARK_FD)) return;
    if (a3 == MARK_WARM) {
        simulate = caches;
        return;
    }
    if (a3 == MARK_INVOKE) {
        lineset_clear(&fetched);
        return;
    }
    if (a3 >= MARK_START) {
        region = (long)(a3 - MARK_START);
        for (Block *b = blocks; b; b = b->next) b->start = b->count;
        simulate = caches;
        mem_start = mem;
        lineset_clear(&fetched);
        return;
    }
    if (a3 != MARK_STOP || region < 0 || !out) return;
    uint64_t total = 0;
    for (Block *b = blocks; b; b = b->next) total += (b->count - b->start) * b->n_insns;
    fprintf(out, "region %ld %" PRIu64 "\n", region, total);
    if (caches)
        fprintf(out, "mem %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                mem.loads - mem_start.loads, mem.stores - mem_start.stores,
                mem.l1_misses - mem_start.l1_misses, mem.l2_misses - mem_start.l2_misses,
                mem.l2_writebacks - mem_start.l2_writebacks,
                mem.l2_rereads - mem_start.l2_rereads);
    for (Block *b = blocks; b; b = b->next) {
        uint64_t runs = b->count - b->start;
        if (!runs) continue;
        fprintf(out, "tb %" PRIx64 " %u %" PRIu64 " ", b->vaddr, b->n_insns, runs);
        for (uint32_t i = 0; i < b->n_bytes; i++) fprintf(out, "%02x", b->bytes[i]);
        fputc('\n', out);
    }
    fflush(out);
    region = -1;
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    uint64_t total = 0;
    for (Block *b = blocks; b; b = b->next) total += b->count * b->n_insns;
    if (out) {
        fprintf(out, "total %" PRIu64 "\n", total);
        fclose(out);
        out = NULL;
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv) {
    const char *l1_spec = NULL, *l2_spec = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) out = fopen(argv[i] + 4, "w");
        if (strncmp(argv[i], "l1d=", 4) == 0) l1_spec = argv[i] + 4;
        if (strncmp(argv[i], "l2=", 3) == 0) l2_spec = argv[i] + 3;
    }
    if (!out) {
        fprintf(stderr, "liteconv count plugin: give out=PATH (a writable file)\n");
        return -1;
    }
    if (l1_spec || l2_spec) {
        if (!l1_spec || !l2_spec || !cache_init(&l1, l1_spec) || !cache_init(&l2, l2_spec)) {
            fprintf(stderr, "liteconv count plugin: give both l1d=KB:WAYS[:lru|random] and "
                            "l2=KB:WAYS[:lru|random]\n");
            return -1;
        }
        caches = true;
    }
    if (info && info->target_name && strcmp(info->target_name, "arm") == 0) write_nr = WRITE_ARM;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
