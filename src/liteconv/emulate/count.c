/*
 * liteconv's instruction-counting TCG plugin for qemu-user (plugin API version 1, as in
 * Debian 12's qemu 7.2). Built with the system compiler on first use (emulate/qemu.py).
 *
 * Every translation block gets an execution counter, added to inline (no callback per
 * block). The guest marks the region to count with write(2) on a file descriptor no
 * process has (MARK_FD) whose byte count says what it marks: MARK_START + k opens region k,
 * MARK_STOP closes it. At each stop the plugin appends to the file given as out=PATH:
 *
 *   region K INSTRUCTIONS
 *   tb VADDR N_INSNS EXECUTIONS HEXBYTES      (blocks executed inside the region)
 *
 * and at exit "total INSTRUCTIONS" of the whole run. Counting is per block: a region
 * starts after the marking syscall's block and ends with the closing one's, so a region
 * holds exactly the instructions the guest ran between the two system calls (the closing
 * call's own setup included). One vCPU is counted exactly; several add racily.
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

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MARK_FD ((uint64_t)(int64_t)-7421)
#define MARK_STOP 1
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
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
    if (num != write_nr || (a1 != MARK_FD && (uint32_t)a1 != (uint32_t)MARK_FD)) return;
    if (a3 >= MARK_START) {
        region = (long)(a3 - MARK_START);
        for (Block *b = blocks; b; b = b->next) b->start = b->count;
        return;
    }
    if (a3 != MARK_STOP || region < 0 || !out) return;
    uint64_t total = 0;
    for (Block *b = blocks; b; b = b->next) total += (b->count - b->start) * b->n_insns;
    fprintf(out, "region %ld %" PRIu64 "\n", region, total);
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
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) out = fopen(argv[i] + 4, "w");
    }
    if (!out) {
        fprintf(stderr, "liteconv count plugin: give out=PATH (a writable file)\n");
        return -1;
    }
    if (info && info->target_name && strcmp(info->target_name, "arm") == 0) write_nr = WRITE_ARM;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
