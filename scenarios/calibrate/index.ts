export { calibrate, measureFault, renderCalibration, CALIBRATION_TOLERANCE, type CalibrationReport, type CalibrationRow, type AssumedParameter } from './calibrate.ts';
