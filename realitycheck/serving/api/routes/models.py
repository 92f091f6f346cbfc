"""/v1/models: which model answers here, and the other checkpoints another service could be started with."""

from fastapi import APIRouter

from realitycheck.serving.api.deps import CallerDep, ScorerDep

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="The model that answers, and the others available")
async def models(who: CallerDep, scorer: ScorerDep):
    from realitycheck.model.checkpoints import CheckpointError, read_card
    from realitycheck.model.inference import list_weights

    loaded = scorer.model_info() if scorer.ready else None
    others = []
    for p in list_weights():
        if loaded and p.name == loaded.get("file"):
            continue
        try:
            card = read_card(p)
            others.append({"id": card.name, "file": p.name, "arch": card.arch, "threshold": card.threshold,
                           "loaded": False})
        except CheckpointError:
            continue
    return {"loaded": loaded, "available": others,
            "note": "one model answers per service; start another with --weights to serve another"}
