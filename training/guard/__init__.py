"""The guard classifier wing: data, distillation, fine-tuning, calibration, evaluation."""
