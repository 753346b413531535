// float8_e4m3 instantiations of the sm_90a indexer kernel (scores_wgmma.cuh).
#include "cuda/indexer/scores_wgmma.cuh"

namespace mla {
namespace cuda {
namespace indexer {

template mla_status launch_scores_wgmma<1, 1>(const ScoresArgs &, cudaStream_t, const char *);
template mla_status launch_scores_wgmma<1, 2>(const ScoresArgs &, cudaStream_t, const char *);
template mla_status launch_scores_wgmma<1, 4>(const ScoresArgs &, cudaStream_t, const char *);

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
