"""One-off investigations behind the design's choices, each ``python -m bench.experiments.<name>``
(the journal, docs/benchmarks/journal.md, has what each found). Those that report a section can
join the suite's report: ``python -m bench.run_all --all`` or ``--only NAME``.

    engines, engine_worker  the same model through PyTorch, TorchScript, ORT fp32/int8, OpenVINO
    http                    the service over HTTP against its own pieces in-process
    v2                      the Open Inference Protocol's transports at saturation
    accuracy                the quantized variants' top-1
    inprocess               the Classifier without HTTP, by settings
    profile                 server CPU per request by thread, py-spy's split of the event loop
    lowrate                 latency at sparse load
    decode                  JPEG decoders and Pillow's draft: cost and agreement
    draft_policy            the JPEG draft margin at phone size: agreement, top-1, CPU
    decode_memory           peak memory per decoded pixel, by format and mode
    format_cost             CPU per phone photo, by format (JPEG, PNG, WebP, HEIC, AVIF)
    upload_cost             receiving an upload (raw, multipart, base64 JSON), before and after
    prediction_drift        drifted traffic's confidence and class-mix divergence from the baseline
    saturation_signal       the autoscaling signals (saturation, queue wait, CPU) against load
    contended_uploads       slow declared uploads against a newcomer when the body budget is full
    versions                callers under load while model versions are swapped live
    tracing                 the cost of OpenTelemetry tracing, off against on (100 % and 1 %)
    image_blocks            Pillow's kept image blocks: CPU on phone photos and small JPEGs
"""
