-- app_version packing: order-preserving, collision-free, and its errors.
SELECT v, app_version_int(v), app_version_text(app_version_int(v))
  FROM unnest(ARRAY['2.3.0', '2.3', '0.96', '2.00', '2.6', '0.26', '0.2.6', '2146.999.999', '0']) AS v
 ORDER BY app_version_int(v);
SELECT app_version_int(NULL) IS NULL AS null_in_null_out;
SELECT regress.try($$SELECT app_version_int('1.2.3.4')$$);
SELECT regress.try($$SELECT app_version_int('2147.0.0')$$);
SELECT regress.try($$SELECT app_version_int('')$$);
SELECT regress.try($$SELECT app_version_text(-1)$$);
SELECT regress.try($$SELECT app_version_text(2147000000)$$);
