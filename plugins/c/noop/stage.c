/* noop: a C stage that keeps every post and reads nothing. Its cost is the
 * boundary's alone: scripts/bench-stages.sh measures it beside the others. */
#include "traptor.h"

traptor_description traptor_stage_describe(void) {
  traptor_description d = {"noop", "0.1.0", TRAPTOR_ENRICHER, "Keeps every post; reads nothing (a benchmark of the boundary)",
                           "{\"type\":\"object\"}", 0};
  return d;
}

const char *traptor_stage_init(traptor_str config, traptor_fields *reads) {
  (void)config;
  *reads = 0;
  return NULL;
}

traptor_outcome traptor_stage_process(const traptor_post *post) {
  (void)post;
  return traptor_keep();
}
