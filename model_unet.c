/* model_unet.c -- diffusers' UNet2DConditionModel (placeholder: being written). */
#include "model_internal.h"

int it__unet_load(it_model *m, it_err *err)
{
    return it__fail(err, IT_EUNSUPPORTED, "%s: unet forward pass not built yet", m->dir);
}
