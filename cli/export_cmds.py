"""Commands: export (TF Serving SavedModel), predict (segment DICOM/PNG/TIFF/.npz inputs)."""

import click

from kerasseg.errors import KerassegError


@click.command(name="export")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str),
              help="Model base folder BASE/NAME; the export goes to BASE/NAME/<version>/.")
@click.option("--version", "version", type=int, default=None,
              help="Version number (default: highest existing + 1).")
@click.option("--force", is_flag=True, help="Overwrite an existing version.")
def export_cmd(source, out, version, force):
    """Export RUN_DIR or MODEL.keras as a TF Serving SavedModel (signatures serving_default, serving_4d, serving_bytes)."""
    from kerasseg.export import export_model

    path = export_model(source, out, version=version, force=force)
    click.echo(f"exported {source} -> {path}")


@click.command(name="predict")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--roi", default=None, help="ROI box x0,y0,x1,y1 in pixels (x = column, x1/y1 exclusive).")
@click.option("--mask-hint", "mask_hint", default=None, type=click.Path(path_type=str),
              help="Mask image whose non-zero bounding box is the ROI.")
@click.option("--out", "out", default="predictions", show_default=True, type=click.Path(path_type=str),
              help="Output folder for masks, overlays and JSON.")
def predict_cmd(model, inputs, roi, mask_hint, out):
    """Segment INPUT... (DICOM, PNG/TIFF or .npz) with MODEL (run dir, .keras or TF Serving export)."""
    from kerasseg.export.predict import parse_roi, predict_inputs

    if roi is not None and mask_hint is not None:
        raise KerassegError("give either --roi or --mask-hint, not both")
    box = parse_roi(roi) if roi is not None else None

    def report(path, info, error):
        if error is not None:
            click.echo(f"Error: {error}", err=True)
        elif "rois" in info:
            click.echo(f"{path}: {info['n']} ROIs -> {info['predictions']}")
        else:
            mm = f", {info['area_mm2']:.1f} mm^2" if info.get("area_mm2") is not None else ""
            click.echo(f"{path}: mass area {info['area_px']} px{mm} -> {info['mask']}")

    results, failures = predict_inputs(model, inputs, out, roi=box, mask_hint=mask_hint,
                                       on_result=report, progress=len(inputs) > 1)
    if failures:
        raise KerassegError(f"{len(failures)} of {len(inputs)} input(s) failed")


COMMANDS = [export_cmd, predict_cmd]
