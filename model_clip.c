/* model_clip.c -- CLIP (placeholder: being written). */
#include "model_internal.h"

int it__clip_load(it_model *m, it_err *err)
{
    return it__fail(err, IT_EUNSUPPORTED, "%s: clip forward pass not built yet", m->dir);
}
